"""The one Job value: every face (library, CLI, HTTP) offers exactly its fields."""

from __future__ import annotations

import dataclasses
import typing

import click
import pytest

from outspool import cli
from outspool.jobs import Job, JobOptions, as_command

FIELDS = {f.name for f in dataclasses.fields(Job)}


def test_library_options_are_the_job_fields() -> None:
    assert set(typing.get_type_hints(JobOptions)) | {"command"} == FIELDS


def test_cli_run_and_submit_offer_every_job_field() -> None:
    for command in (cli.run, cli.submit):
        assert isinstance(command, click.Command)
        names = {p.name for p in command.params}
        assert names >= FIELDS, (command.name, FIELDS - names)


def test_the_http_body_maps_one_to_one_to_a_job() -> None:
    pytest.importorskip("fastapi")
    from outspool.web.api import Submission

    assert set(Submission.model_fields) == FIELDS
    body = Submission.model_validate(
        {"command": ["make", "test"], "env": {"A": "1"}, "pty": True, "timeout": 5}
    )
    assert body.job() == Job(command=("make", "test"), env={"A": "1"}, pty=True, timeout=5)


def test_a_job_is_keyword_only_frozen_and_copies_what_it_is_given() -> None:
    env = {"A": "1"}
    command = ["echo", "hi"]
    job = Job(command=command, env=env)  # type: ignore[arg-type]
    env["A"] = "2"
    command.append("there")
    assert (job.command, dict(job.env)) == (("echo", "hi"), {"A": "1"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Job(("echo",))  # type: ignore[call-arg]


@pytest.mark.parametrize("bad", ["echo hi", b"echo", None, 3, ("echo", 1), [b"echo"]])
def test_a_command_must_be_a_list_of_strings(bad: object) -> None:
    with pytest.raises(TypeError):
        as_command(bad)
