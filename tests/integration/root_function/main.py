"""root_echo: what its process sees, including the working directory modules kept at import.

A test function for templates forked from the root template: functions-framework's default
source, gunicorn's chdir default and multiprocessing's ORIGINAL_DIR are taken from the working
directory when those modules are imported, which in a forked template happened in the root.
"""

from __future__ import annotations

import multiprocessing.process
import os
import sys

import flask
import functions_framework._function_registry as registry
import gunicorn.config


def root_echo(request: flask.Request) -> flask.Response:
    return flask.jsonify(
        env=dict(os.environ),
        argv=sys.argv,
        path=sys.path,
        cwd=os.getcwd(),
        default_source=registry.DEFAULT_SOURCE,
        chdir_default=gunicorn.config.Chdir.default,
        original_dir=multiprocessing.process.ORIGINAL_DIR,
        imported_in=os.getpid(),
    )
