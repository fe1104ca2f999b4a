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
validated = validator(app)
