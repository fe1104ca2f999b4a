"""A one-file Django project for the end-to-end tests (Debian's python3-django).

No database: a hello view, an echo view and the pid of the worker.
"""

import os
from wsgiref.validate import validator

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="wsgibridge-test-only",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    USE_TZ=True,
)

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def hello(request):
    return HttpResponse("Hello from Django at %s" % request.path, content_type="text/plain")


def echo(request):
    return HttpResponse(request.body, content_type="application/octet-stream")


def page(request, n):
    return HttpResponse("Page %d at %s" % (n, request.path), content_type="text/plain")


def pid(request):
    return HttpResponse(str(os.getpid()), content_type="text/plain")


urlpatterns = [path("", hello), path("echo", echo), path("pid", pid), path("page/<int:n>", page)]

application = get_wsgi_application()
validated = validator(application)
