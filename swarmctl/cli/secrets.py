"""secrets: encrypted at rest in secrets/, decrypted only in memory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from swarmctl.cli.app import Obj, cli, json_option
from swarmctl.cli.render import emit_json, say, table, warn


@cli.group()
def secrets() -> None:
    """Secrets encrypted at rest (AES-256-GCM) in secrets/, decrypted only in memory."""


def _recovered(directory: Path) -> None:
    """Finish (or undo) an interrupted rekey of ``directory`` before anything reads or writes it."""
    from swarmctl.secretstore import recover

    done = recover(directory, os.environ)
    if done:
        say(done)


def _default_dir(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path:
    """--dir, else the secrets/ beside the inventory (where bootstrap and deploy read them), else
    ./secrets when there is no inventory to go by."""
    if value is not None:
        return value
    from swarmctl.errors import InputError

    obj = ctx.find_object(Obj)
    try:
        inventory = obj.inventory_path() if obj is not None else None
    except InputError:
        inventory = None
    return inventory.resolve().parent / "secrets" if inventory is not None else Path("secrets")


_secrets_dir = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    callback=_default_dir,
    help="Where the encrypted secret files live (default: secrets/ beside the inventory, else ./secrets).",
)


@secrets.command("init")
def secrets_init() -> None:
    """Create a new key file (a keyring with one random key, mode 0600); never overwrites one.

    \b
    Example: swarmctl secrets init
    """
    from swarmctl.secretstore import create_key_file

    path, key = create_key_file(os.environ)
    say(f"created {path} (key fingerprint {key.fingerprint})")
    say("back it up somewhere safe: without it the secrets cannot be decrypted")


@secrets.command("set")
@click.argument("name")
@click.option("--from-file", "from_file", type=click.Path(dir_okay=False, path_type=Path), help="Read the value here.")
@_secrets_dir
def secrets_set(name: str, from_file: Path | None, directory: Path) -> None:
    """Encrypt a value into DIR/NAME.enc, from --from-file or stdin (never from the command line).

    \b
    Example: swarmctl secrets set db_password < password.txt
    """
    from swarmctl.errors import InputError
    from swarmctl.files import read_regular
    from swarmctl.secretstore import MAX_SIZE, SUFFIX, check_name, load_key, write_secret

    check_name(name)
    _recovered(directory)
    key = load_key(os.environ)
    if from_file is not None:
        # a regular file of at most swarm's limit for a secret: a FIFO or /dev/zero is refused, not read forever
        value = read_regular(from_file, MAX_SIZE, "secret values")
    elif sys.stdin.isatty():
        value = click.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True, err=True).encode()
    else:
        value = sys.stdin.buffer.read()
    if not value:
        raise InputError("the value is empty")
    path = directory / f"{name}{SUFFIX}"
    write_secret(path, value, key)
    say(f"{path}: {len(value)} bytes, key {key.fingerprint}")
    if from_file is not None and value.endswith(b"\n"):
        # kept as given (a certificate or a key file wants it); a password usually does not
        warn(f"the value ends with the newline of {from_file}, kept: `printf %s VALUE | swarmctl secrets set "
             f"{name}` stores it without one")  # fmt: skip


@secrets.command("list")
@_secrets_dir
@json_option("secrets")
def secrets_list(directory: Path, as_json: bool) -> None:
    """Names and sizes of the secrets, and the key's fingerprint (never a value).

    \b
    Example: swarmctl secrets list
    """
    from swarmctl.secretstore import list_secrets, load_key

    _recovered(directory)
    key = load_key(os.environ)
    listed = list_secrets(directory, key)
    if as_json:
        emit_json(
            {
                "key": key.fingerprint,
                "secrets": [
                    {"name": x.name, "bytes": x.size, "file": str(x.path), "key": x.key, "problem": x.problem}
                    for x in listed
                ],
            }
        )
    else:
        rows = [(x.name, "-" if x.problem else str(x.size), x.key or "?", str(x.path)) for x in listed]
        click.echo(table(rows, ("NAME", "BYTES", "KEY", "FILE")) if rows else f"no secrets in {directory}")
        click.echo(f"key: {key.fingerprint} ({key.source}, {len(key.retired)} retired)")
        old = sorted({x.key for x in listed if not x.problem and x.key != key.fingerprint})
        if old:
            warn(f"some secrets use a retired key ({', '.join(old)}): `swarmctl secrets rekey --dir {directory}` "
                 "moves them")  # fmt: skip
    broken = {str(x.path): x.problem for x in listed if x.problem}
    if broken:  # a secret that does not decrypt is a deploy that will fail: say so with the exit status
        from swarmctl.errors import HostsFailed

        raise HostsFailed("secrets list", broken)


@secrets.command("show")
@click.argument("name")
@click.option("--force", is_flag=True, help="Write the value even when stdout is not a terminal.")
@_secrets_dir
def secrets_show(name: str, force: bool, directory: Path) -> None:
    """Print a secret's value - only to a terminal, unless --force.

    \b
    Example: swarmctl secrets show db_password
    """
    from swarmctl.errors import InputError
    from swarmctl.secretstore import SUFFIX, check_name, load_key, read_secret

    check_name(name)
    path = directory / f"{name}{SUFFIX}"
    if not path.exists():  # the missing name first: that is the mistake, whatever stdout is
        raise InputError(f"no secret {name!r} in {directory} (`swarmctl secrets list` shows what there is)")
    if not sys.stdout.isatty() and not force:
        raise InputError("refusing to write a secret to a pipe or a file; add --force if that is what you want")
    value = read_secret(path, load_key(os.environ), os.environ)
    sys.stdout.buffer.write(value)
    if sys.stdout.isatty() and not value.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


@secrets.command("rekey")
@_secrets_dir
def secrets_rekey(directory: Path) -> None:
    """Re-encrypt every secret of DIR under a new key, all or nothing; the old key is retired (kept
    in the key file, so that other directories sharing it still decrypt), never deleted.

    \b
    Example: swarmctl secrets rekey
    """
    from swarmctl.secretstore import rekey

    done = rekey(directory, os.environ)
    say(f"re-encrypted {done.count} secrets in {directory}: key {done.old} -> {done.new} ({done.source})")
    say(f"key {done.old} is retired, not deleted: other directories that use it still decrypt")
    say("the swarm secrets of these files get new names at their next deploy (their services restart once)")
