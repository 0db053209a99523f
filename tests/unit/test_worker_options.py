"""``airlock serve``'s queue worker takes the shipped host.json's queue settings (the wheel has no host.json):
the figures in ``shared.handlers.worker.HOST_JSON_QUEUES`` are the file's, read by the same parser devstack's
runner uses, and its threads cover every message in flight (batchSize + newBatchThreshold)."""
from dataclasses import astuple
from pathlib import Path

from devstack.queue_runner import QueueOptions
from shared.config import Settings
from shared.handlers.worker import HOST_JSON_QUEUES, RunWorker
from shared.services import Services

ROOT = Path(__file__).resolve().parents[2]


def test_the_in_process_worker_uses_host_json_queue_settings():
    assert astuple(QueueOptions.from_host_json(ROOT / "host.json")) == astuple(HOST_JSON_QUEUES)


def test_the_worker_runs_both_queues_with_a_thread_per_message_in_flight():
    settings = Settings.from_env({"AZURE_SUBSCRIPTION_ID": "s", "ACR_RESOURCE_GROUP": "g", "ACR_NAME": "a",
                                  "AzureWebJobsStorage": "UseDevelopmentStorage=true", "RUNS_QUEUE": "my-runs",
                                  "RUN_MAX_DEQUEUE_COUNT": "7"})
    worker = RunWorker(Services(settings), reaper_interval=None)  # nothing is reached before it polls
    try:
        assert [(t.function_name, t.queue_name) for t in worker.targets] == [
            ("run_worker", "my-runs"), ("run_poison", "my-runs-poison")]
        assert worker.worker_threads == HOST_JSON_QUEUES.batch_size + HOST_JSON_QUEUES.new_batch_threshold == 24
        assert worker.options.max_dequeue_count == 7  # RUN_MAX_DEQUEUE_COUNT, which host.json's count equals
        assert worker.status()["running"] is False
    finally:
        worker.close(0)
