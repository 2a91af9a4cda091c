"""The rule language shared by rule tags and dynamic segments (docs/rules.md).

Pure (no ORM): ``parse.rule_parse`` turns the stored JSON into frozen dataclasses
(``syntax``) or says everything that is wrong with it; ``interpret.rule_matches`` evaluates a
condition for one member from their ``MemberFacts`` (the incremental path);
``members.segments.compile.rule_sql`` turns the same condition into one set-based SQL
expression (the full recompute). Both follow the value semantics of ``values``, and a
property test holds them to a plain reference evaluator. ``analysis`` says what a rule
reads and when time alone may change its answer.
"""
