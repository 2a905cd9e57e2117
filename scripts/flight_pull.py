"""Read a granted ecgfed slice with a plain Arrow Flight client (pyarrow), no ecgfed code.

Usage: python flight_pull.py HOST:PORT HEADERS.json
where HEADERS.json is what `ecgfed gateway sign-do-get --member M --key K --site SITE --slice S` prints:
{"ticket": "ecgfed-slice:<slice id>", "headers": {"x-ecgfed-member": ..., ...}}.
The signature headers are single-use and valid for about a minute (docs/flight.md).
Prints the table's row count, columns and the slice root announced in the schema metadata.
"""
import json
import sys

import pyarrow.flight as flight

addr, headers_file = sys.argv[1], sys.argv[2]
with open(headers_file) as f:
    signed = json.load(f)

client = flight.FlightClient(f"grpc://{addr}")
options = flight.FlightCallOptions(
    headers=[(k.encode(), v.encode()) for k, v in signed["headers"].items()]
)
reader = client.do_get(flight.Ticket(signed["ticket"].encode()), options)
table = reader.read_all()
meta = table.schema.metadata or {}
print(json.dumps({
    "rows": table.num_rows,
    "columns": table.column_names,
    "slice_root": meta.get(b"ecgfed.slice_root", b"").decode(),
    "signal_values": sum(len(v) for v in table.column("signal").to_pylist()),
}))
