"""Scale benchmark for paiflow-operator (`make bench`); not part of the tests."""
