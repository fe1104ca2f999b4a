"""A small Flask app for the end-to-end tests (Debian's python3-flask)."""

import os
from wsgiref.validate import validator

from flask import Flask, request

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello from Flask"


@app.route("/echo", methods=["POST"])
def echo():
    return request.get_data(), 200, {"Content-Type": "application/octet-stream"}


@app.route("/pid")
def pid():
    return str(os.getpid())


@app.route("/user/<name>")
def user(name):
    return "user %s, script %s" % (name, request.script_root)


application = app


class SizedReads:
    """wsgi.input for Flask under wsgiref.validate, which asserts that
    read() gets a size, as PEP 333 asked: PEP 3333 allows read() without
    one, and Werkzeug calls it so where wsgi.input_terminated is set."""

    def __init__(self, stream):
        self.stream = stream

    def read(self, size=-1):
        return self.stream.read(size)

    def readline(self, *args):
        return self.stream.readline(*args)

    def readlines(self, *args):
        return self.stream.readlines(*args)

    def __iter__(self):
        return iter(self.stream)


def sized_reads(environ, start_response):
    environ["wsgi.input"] = SizedReads(environ["wsgi.input"])
    return app(environ, start_response)


validated = validator(sized_reads)
