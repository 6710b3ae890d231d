"""uWSGI entry point: `module = app.wsgi:application`."""

# Monkey-patch before anything else imports socket, ssl or threading.
from gevent import monkey

monkey.patch_all()

from app import admin_ui  # noqa: E402
from app.config import Config  # noqa: E402
from app.factory import create_app, start_admin_ui_stats, start_message_queue  # noqa: E402
from app.upstream import eio_socket, ping_timer, service_task, uwsgi_websocket, versions  # noqa: E402

_config = Config.from_env()
# Refuses to start (PatchMismatchError) or disables every patch, per SIOKIT_PATCH_MISMATCH.
_patched = versions.patches_allowed(_config.patch_mismatch)
if _patched and _config.websocket_driver == "event":
    uwsgi_websocket.install(_config.max_backlog_bytes)
    eio_socket.install()
    ping_timer.install()
    service_task.install()
# gevent_uwsgi, not gevent: under uWSGI the gevent mode has no websocket (Flask-SocketIO #1487, #1058).
application = create_app(_config, async_mode="gevent_uwsgi", upstream_patches=_patched)
if _patched and _config.websocket_driver == "event" and "siokit_admin_ui" in application.extensions:
    admin_ui.count_polling_by_upgrades(application.extensions["siokit_admin_ui"])
    admin_ui.count_websocket_packets(application.extensions["siokit_admin_ui"])

if _config.message_queue is not None:
    try:
        from uwsgidecorators import postfork
    except ImportError:  # not under uWSGI: the first request starts it (see create_app)
        pass
    else:
        # In each worker right after the fork: listener greenlets and Redis sockets must not be
        # created in the master. (With lazy-apps this hook never fires; the first request covers it.)
        postfork(lambda: start_message_queue(application))
        if _patched:
            postfork(lambda: start_admin_ui_stats(application))
