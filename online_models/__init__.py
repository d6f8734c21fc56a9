"""Pure online-learning library in River's style (no Faust, Kafka or Redis imports).

Every model learns one event at a time (``learn_one``), predicts before it learns, keeps
bounded memory and snapshots/restores its state. Model families arrive with later issues.
"""
