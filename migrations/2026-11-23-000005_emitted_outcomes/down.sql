DROP TABLE emitted_outcomes;
