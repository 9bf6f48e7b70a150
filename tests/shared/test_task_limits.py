"""Every task has a deadline: one stuck on something outside (a server that never answers) frees its
worker, and the deadline ends before Redis would hand the same task to a second worker."""

from __future__ import annotations

from syndicate import tasks


def test_every_task_has_a_soft_and_a_hard_time_limit_below_the_brokers_visibility_timeout():
    ours = {name: task for name, task in tasks.app.tasks.items() if name.startswith("syndicate.")}
    assert {"syndicate.tick", "syndicate.deliver_batch", "syndicate.poll_feed_batch"} <= set(ours)
    for name, task in ours.items():
        assert task.soft_time_limit and task.time_limit, f"{name} has no time limit"
        assert task.soft_time_limit < task.time_limit < tasks.VISIBILITY_TIMEOUT, name
