"""Subscriptions: the handle users hold, the per-subscription state machine and
the scheduler that drives them. Internal; the public names are re-exported from
the package root."""
