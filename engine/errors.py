"""User-facing errors: one line that says what was wrong and how to fix it.

The CLI prints ``error: <message>`` for these and exits non-zero; anything else is a bug.
"""
import argparse


class CodeFusionError(ValueError):
    """Bad input from the user (prompt, config, flag, file)."""


class CheckpointError(CodeFusionError):
    """A checkpoint directory that is missing, incomplete or does not match its config."""


class DataError(CodeFusionError):
    """A data file that cannot be read (names file:line where it can)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a process manager's stop, a scheduler's preemption), raised in the main thread as Ctrl-C is:
    the same clean exit (temporary folders removed, a training run saved), exit status 143."""


def raise_on_sigterm(signum, frame):
    raise Terminated


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (``error: <what> (see <prog> --help)``, exit 2), like every
    other error of the CLI; its subcommands' parsers are of this class as well."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown flag is reported by the subcommand it followed (its --help lists the
        flags that subcommand takes), not by the top-level parser."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            chosen = next((action.choices.get(getattr(parsed, action.dest, None)) for action in self._actions
                           if isinstance(action, argparse._SubParsersAction)), None)
            (chosen or self).error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed
