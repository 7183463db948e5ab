"""Drives basho's TES endpoint with py-tes, an independent GA4GH TES 1.1 client: service-info,
300 tasks created, one read in every view, all listed in pages, one canceled. py-tes turns every
answer into its models of the specification's schemas and refuses a field they do not have or a
value of the wrong type, so each answer is checked against them on the way.

    python pytes_client.py BASE_URL TOKEN VISA   # prints a JSON summary
"""

import json
import sys

import tes

base, token, visa = sys.argv[1:4]
client = tes.HTTPClient(base, token=token, timeout=30)

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
assert seen == list(reversed(ids)), "pages are newest first, each task once"

client.cancel_task(ids[-1])
canceled = client.get_task(ids[-1], "MINIMAL").state

print(json.dumps({"created": len(ids), "listed": len(seen), "pages": pages,
                  "views": views, "canceled": canceled}))
