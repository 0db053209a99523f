"""ACR Tasks for the emulator: scheduleRun, runs, agent pools, tasks (api-version 2025-03-01-preview).

``install(emu)`` returns the Starlette routes and sets ``emu.tasks`` to the ``TasksState``. Every
route sits under ``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/
registries/{name}``, checks the ARM bearer token (``emu.auth``) and the api-version, and answers
errors as ARM ``ErrorResponse`` bodies (``errors.arm_error``), including 405 for other methods.

Behaviour tests can rely on
---------------------------
Clock. A run is ``Queued`` for one step, then ``Running`` for two steps ("build"), then pushes its
images and ends. A step lasts ``emu.config.run_step_seconds``, re-read while waiting, so changing
it (``/_devstack/settings``) also affects runs already under way.

Agent pools. Pools come from ``emu.config.agent_pools`` (already online). A run with
``agentPoolName`` needs a free agent of that pool: a pool with count N runs at most N runs at once,
the others stay ``Queued`` in arrival order; a pool at count 0 keeps its runs ``Queued``.
``listQueueStatus`` counts the pool's ``Queued`` runs. Creating or scaling a pool (PUT/PATCH that
changes ``count``) answers 201 with ``Azure-AsyncOperation`` (+ ``Retry-After``) and the pool shows
``provisioningState`` ``Creating``/``Updating``; the operation stays ``InProgress`` for
``config.pool_scale_seconds`` (None: one step; the ``azure`` profile: minutes), then the new count
takes effect (queued runs may start) and the operation is ``Succeeded``. DELETE is long-running too:
202 with ``Location`` (``.../agentPools/{pool}/operationResults/{op}``: 202 while running, then
204), ``Azure-AsyncOperation`` and ``Retry-After``; the pool shows ``Deleting`` (and takes no new
runs: 409 ``AgentPoolDeleting``) for ``config.pool_delete_seconds``, then it is gone (404).
A run without ``agentPoolName`` runs on the shared pool (no limit).

Outcome switches (deterministic; checked on build arguments and task values, and on the file name
of ``dockerFilePath`` / a task step's Dockerfile / override ``file``):
  ``AIRLOCK_EMULATOR_FAIL=1``    or ``fail.Dockerfile``    -> ``Failed`` after the build steps
  ``AIRLOCK_EMULATOR_TIMEOUT=1`` or ``timeout.Dockerfile`` -> ``Timeout`` after the build steps
  ``AIRLOCK_EMULATOR_HANG=1``    or ``hang.Dockerfile``    -> stays ``Running`` until cancelled or
                                                              until its real ``timeout`` (seconds)
  ``AIRLOCK_EMULATOR_STEPS_AFTER_PUSH=N`` -> pushes, then stays ``Running`` for N more steps (a later
                                          step of a multi-step task; ``inf``: until cancelled or timed
                                          out), then ``Succeeded``
Any ``Running`` run also ends ``Timeout`` once it has run longer than its ``timeout`` (wall clock).
Values "1", "true", "yes" (any case) switch on. Nothing is pushed by a run that fails in its build
steps. ``outputImages`` are listed when a run succeeds: a run cancelled (or timed out) in the steps
after its push keeps its images in the registry and lists none.

Pushes. A successful ``DockerBuildRequest`` (or Docker task step) with ``isPushEnabled`` (default
true) pushes a small generated image (``devstack.oci``, one layer, the run's platform, seeded by run
id and name) for every ``imageNames`` entry to the backing registry (``emu.config.backing_url``),
and records ``outputImages`` ``{registry: login server, repository, tag, digest}``. Names are
relative to the registry (a leading login server or ``<name>.azurecr.io/`` is dropped); tag
defaults to ``latest``; ``{{.Run.ID}}``, ``{{.Run.Registry}}``, ``{{.Run.RegistryName}}``,
``{{.Run.OS}}``, ``{{.Run.Architecture}}`` and ``{{.Run.Date}}`` are substituted. An
``EncodedTaskRunRequest`` pushes the images its YAML lists under ``push`` (top level or a step),
after substituting ``{{.Run.*}}``, ``$ID``/``$Registry``/``$RegistryName`` and ``{{.Values.x}}``.

Logs. Each run writes ``logs/{runId}/rawtext.log`` (an append blob in container ``acr-task-logs``
of ``emu.config.storage_connection_string``); ``listLogSasUrl`` returns a read SAS URL for it.
Build arguments and values marked ``isSecret`` never appear in the run log or in Python logs.
``listBuildSourceUploadUrl`` returns a write SAS URL into container ``acr-build-sources``; a run
whose ``sourceLocation`` is that relative path fails if nothing was uploaded there.

Error codes: 400 ``InvalidRequestContent`` (not a JSON object), ``InvalidParameter`` (validation),
``InvalidRunRequestType``, ``AgentPoolNotFound``/``TaskNotFound`` (a run request naming an unknown
pool/task), ``TaskDisabled``, ``LocationRequired``, ``MissingApiVersionParameter``,
``InvalidApiVersionParameter``; 404 ``ResourceNotFound`` (unknown run, pool, task, operation,
registry), ``ResourceGroupNotFound``, ``SubscriptionNotFound``; 405 ``MethodNotAllowed``;
409 ``AgentPoolInUse`` (deleting a pool with queued or running runs), ``StorageNotConfigured`` (log or
upload URL without a storage connection string); 401 from the bearer check (with
``WWW-Authenticate``). Cancelling a finished run is a no-op (200). ``close()`` stops the run threads.

Modules, by resource: ``runs`` (the run clock, agents, pushes, run JSON, ``$filter``), ``pools``
(agent pools and their long-running operations), ``definitions`` (task resources), ``requests`` (run
request bodies and image names), ``logs`` (run logs and build sources in storage); ``state`` joins
them into ``TasksState``; ``http`` is the routes; ``common`` what they share.
"""
from .common import ArmError
from .http import install
from .requests import parse_image_name, render_run_template
from .runs import filter_matches
from .state import TasksState

__all__ = ["ArmError", "TasksState", "filter_matches", "install", "parse_image_name", "render_run_template"]
