"""Offline evaluation runners (``livepulse eval recsys|nab|sentiment``), kept apart from the
model modules they measure: each streams a data set through a model prequentially (predict,
then learn) and prints one JSON object as its last line. Figures: ``benchmarks/RESULTS.md``.
"""
