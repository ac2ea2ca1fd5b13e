"""The sans-IO core: operations, multi-value registers, merge rules, clocks.

Nothing here touches a disk, a socket or a database: functions take values and return values, so
the store (local edits, replay) and the network (remote change sets) share one set of rules.
"""
