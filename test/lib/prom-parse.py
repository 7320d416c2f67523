"""Parse a metrics exposition with the Prometheus project's own Python client
(prometheus_client, Debian's python3-prometheus-client): stdin is the text,
argv[1] the format ("prometheus": text format 0.0.4, "openmetrics": the
strict OpenMetrics 1.0 parser, which also requires the # EOF line).
Prints one JSON object: {"families": [{"name", "type", "samples": [{"name",
"labels", "value"}]}]}. A parse error exits 1 with the parser's message."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics


def value(v):
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return v


def main():
    fmt = sys.argv[1]
    text = sys.stdin.read()
    parse = parse_openmetrics if fmt == "openmetrics" else parse_prometheus
    try:
        families = [
            {
                "name": f.name,
                "type": f.type,
                "samples": [{"name": s.name, "labels": s.labels, "value": value(s.value)} for s in f.samples],
            }
            for f in parse(text)
        ]
    except Exception as e:  # the parser's verdict is the point
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump({"families": families}, sys.stdout)


main()
