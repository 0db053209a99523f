"""acr-airlock Function App: triggers and bindings only; every body hands off to shared.handlers.

Importing this module is cheap: no network, no Azure SDK imports, no settings read. The HTTP
API (shared.http.app, Starlette) and the SDK clients are built on first use.
"""
import logging

import azure.functions as func

from shared.entrypoints import asgi_app, handle_blob, handle_event, handle_pool_timer, handle_resync
from shared.entrypoints import handle_poison_message, handle_reaper, handle_run_message

app = func.AsgiFunctionApp(app=asgi_app, http_auth_level=func.AuthLevel.FUNCTION)
# the runtime honours retry policies on timers (not on blob, Event Grid or queue triggers)
TIMER_RETRY = dict(strategy="exponential_backoff", max_retry_count="3", minimum_interval="00:00:10",
                   maximum_interval="00:05:00")


@app.function_name("manifest_uploaded")
@app.blob_trigger(arg_name="blob", path="%MANIFESTS_CONTAINER%/{name}", connection="AzureWebJobsStorage",
                  source=func.BlobSource.EVENT_GRID)
def manifest_uploaded(blob: func.InputStream) -> None:
    handle_blob(blob.name, blob.read(), blob.blob_properties)


@app.function_name("resync_timer")
@app.timer_trigger(arg_name="timer", schedule="%RESYNC_SCHEDULE%", run_on_startup=False, use_monitor=True)
@app.retry(**TIMER_RETRY)
def resync_timer(timer: func.TimerRequest) -> None:
    handle_resync(past_due=timer.past_due)


@app.function_name("pool_scaler")
@app.timer_trigger(arg_name="timer", schedule="%POOL_SCALE_SCHEDULE%", run_on_startup=False, use_monitor=True)
@app.retry(**TIMER_RETRY)
def pool_scaler(timer: func.TimerRequest) -> None:
    handle_pool_timer(past_due=timer.past_due)


# -- queued runs (docs/architecture.md, "Run lifecycle") ---------------------------------------------
@app.function_name("run_worker")
@app.queue_trigger(arg_name="msg", queue_name="%RUNS_QUEUE%", connection="AzureWebJobsStorage")
def run_worker(msg: func.QueueMessage, context: func.Context) -> None:
    handle_run_message(msg, context)


@app.function_name("run_poison")
@app.queue_trigger(arg_name="msg", queue_name="%RUNS_QUEUE%-poison", connection="AzureWebJobsStorage")
def run_poison(msg: func.QueueMessage, context: func.Context) -> None:
    handle_poison_message(msg, context)


@app.function_name("run_reaper")
@app.timer_trigger(arg_name="timer", schedule="%REAPER_SCHEDULE%", run_on_startup=False, use_monitor=True)
@app.retry(**TIMER_RETRY)
def run_reaper(timer: func.TimerRequest) -> None:
    handle_reaper(past_due=timer.past_due)


@app.function_name("registry_event")
@app.event_grid_trigger(arg_name="event")
def registry_event(event: func.EventGridEvent) -> None:
    handle_event(event)


logging.getLogger(__name__).debug("function index loaded")
