"""Drives basho's TES endpoint with py-tes, an independent GA4GH TES 1.1 client: service-info,
300 tasks created, one read in every view, all listed in pages, one canceled. py-tes turns every
answer into its models of the specification's schemas and refuses a field they do not have or a
value of the wrong type, so each answer is checked against them on the way.

Every answer is also read raw and validated against pydantic-tes's models, generated from the
specification repository's OpenAPI document, with unknown fields forbidden: service-info, a
created task, every view of a queued, a canceled and an ended task (one whose outputs are a
release request), every page of the list in every view.

    python pytes_client.py BASE_URL TOKEN VISA ENDED_TASK   # prints a JSON summary
"""

import json
import sys
from typing import Optional

import pydantic
import pydantictes.models as spec
import requests
import tes
from pydantic.fields import FieldInfo

base, token, visa, ended = sys.argv[1:5]
client = tes.HTTPClient(base, token=token, timeout=30)

# pydantic-tes 0.4.0's models come from the specification's 2022 draft of 1.1; what the final
# 1.1.0 added is added here, by name, and nothing else is let through.
ADDED_IN_1_1 = {
    spec.TesExecutor: {"ignore_error": Optional[bool]},
    spec.TesOutput: {"path_prefix": Optional[str]},
    spec.TesInput: {"streamable": Optional[bool]},
    spec.TesTask: {"state": Optional[str]},
}
STATES = {"UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "COMPLETE",
          "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED", "CANCELING"}
MODELS = [m for m in vars(spec).values()
          if isinstance(m, type) and issubclass(m, pydantic.BaseModel)
          and m.__module__ == spec.__name__]
for model in MODELS:
    model.model_config["extra"] = "forbid"
    for name, annotation in ADDED_IN_1_1.get(model, {}).items():
        model.model_fields[name] = FieldInfo(annotation=annotation, default=None)
# Referencing models are rebuilt after the ones they refer to.
for _ in range(3):
    for model in MODELS:
        model.model_rebuild(force=True)

validated = {}


def checked(model, path, **params):
    """GETs `path`, validates the body as `model` and returns it."""
    r = requests.get(base + path, params=params, timeout=30,
                     headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, (path, r.status_code, r.text)
    body = r.json()
    model.model_validate(body)
    tasks = body.get("tasks", [body]) if model is not spec.TesServiceInfo else []
    for t in tasks:
        assert t.get("state") in STATES, t
    validated[model.__name__] = validated.get(model.__name__, 0) + 1
    return body


checked(spec.TesServiceInfo, "/ga4gh/tes/v1/service-info")

info = client.get_service_info()
assert info.type["artifact"] == "tes" and info.type["version"] == "1.1.0", info

ids = []
for i in range(300):
    task = tes.Task(
        name=f"pytes-{i:03}",
        inputs=[tes.Input(url="basho://datasets/JGAD000101/table.csv",
                          path="/data/JGAD000101/table.csv")],
        outputs=[tes.Output(url="s3://elsewhere/n.txt", path="/results/n.txt")],
        executors=[tes.Executor(image="basho/demo",
                                command=["wc", "-l", "/data/JGAD000101/table.csv"],
                                env={"LANG": "C"})],
        tags={"basho_project": "P-0001", "basho_visas": visa, "batch": str(i % 3)},
    )
    if i == 0:
        r = requests.post(base + "/ga4gh/tes/v1/tasks", data=json.dumps(task.as_dict()),
                          headers={"Authorization": f"Bearer {token}",
                                   "Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 200, r.text
        spec.TesCreateTaskResponse.model_validate(r.json())
        ids.append(r.json()["id"])
        continue
    ids.append(client.create_task(task))

views = {}
for view in ["MINIMAL", "BASIC", "FULL"]:
    got = client.get_task(ids[0], view)
    assert got.id == ids[0] and got.state == "QUEUED", got
    views[view] = sorted(k for k, v in got.as_dict().items() if v not in (None, [], {}))
full = client.get_task(ids[0], "FULL")
assert full.executors[0].command[0] == "wc", full
assert full.logs[0].system_logs, full

seen, pages, page_token = [], 0, None
while True:
    page = client.list_tasks(view="BASIC", page_size=64, page_token=page_token)
    pages += 1
    seen += [t.id for t in page.tasks]
    assert all(t.name.startswith("pytes-") for t in page.tasks)
    page_token = page.next_page_token
    if not page_token:
        break
assert seen == list(reversed(ids)) + [ended], "pages are newest first, each task once"

client.cancel_task(ids[-1])
canceled = client.get_task(ids[-1], "MINIMAL").state

for view in ["MINIMAL", "BASIC", "FULL"]:
    for task_id in [ids[0], ids[-1], ended]:
        checked(spec.TesTask, f"/ga4gh/tes/v1/tasks/{task_id}", view=view)
    page_token = ""
    while True:
        page = checked(spec.TesListTasksResponse, "/ga4gh/tes/v1/tasks", view=view,
                       page_size=128, page_token=page_token)
        page_token = page.get("next_page_token")
        if not page_token:
            break
full = checked(spec.TesTask, f"/ga4gh/tes/v1/tasks/{ended}", view="FULL")
assert full["state"] == "COMPLETE" and full["logs"][0]["outputs"], full

print(json.dumps({"created": len(ids), "listed": len(seen), "pages": pages,
                  "views": views, "canceled": canceled, "validated": validated}))
