"""An independent model of the p2psync/1 spec that computes the known-answer vectors, one module
per family of cases. protocol/make_vectors.py writes them to protocol/vectors/.

It imports nothing from p2psync: the spec's rules are modelled here from protocol/*.md, and
tests/test_vectors.py holds the code to them.

    canonical_text, spec (recipes, devices), rules (registers, limits), op_schema (merge.md §2)
      -> changesets (build, split, parse, check) -> world (the state) -> replica (logs, receive)
      -> the case tables: basic_cases, changeset_cases, scenario, rejection_cases (with wires and
         exchange_cases), op_cases, register_cases, chunking_cases.
"""
