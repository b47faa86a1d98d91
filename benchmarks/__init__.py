"""LogHog benchmarks: a load generator, a checker and a runner beside rsyslog (issue 7)."""
