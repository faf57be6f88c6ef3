"""What is measured about a run: calibration, uncertainty, ambiguity, human labels, retrieval, probes, maps."""
