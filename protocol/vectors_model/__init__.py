"""An independent model of the p2psync/1 spec that computes the known-answer vectors, one module
per family of cases. protocol/make_vectors.py writes them to protocol/vectors/.

spec (recipes, devices) -> world (registers) -> replica (logs, change sets, receive) -> the case
tables: basic_cases, changeset_cases, scenario, rejection_cases (with wires and exchange_cases),
op_cases, register_cases, chunking_cases.
"""
