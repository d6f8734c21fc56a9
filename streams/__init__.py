"""The wire: topics, event contracts, validation, codecs, the Faust app, the embedded broker,
the simulator and the replayer."""
