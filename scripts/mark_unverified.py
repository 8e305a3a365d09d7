"""Turn '# rxcui unverified' comments in ontologies/drugs-*.ttl into data: ca:rxcuiStatus "unverified".

The gate then knows which ingredient codes are not yet confirmed against RxNorm, and `clinagent knowledge`
counts them. Idempotent: lines that already carry the triple are left alone.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "ontologies"
LINE = re.compile(r'^(?P<pre>.*?)(?P<code>ca:rxcui "\d+" ;)(?P<rest>\s*#\s*rxcui unverified.*)$')


def main() -> int:
    n = 0
    for p in sorted(ROOT.glob("drugs-*.ttl")):
        out = []
        for line in p.read_text().splitlines():
            m = LINE.match(line)
            if m and "rxcuiStatus" not in line:
                line = f'{m["pre"]}{m["code"]} ca:rxcuiStatus "unverified" ;{m["rest"]}'
                n += 1
            elif "rxcui unverified" in line and "ca:rxcui " in line and "rxcuiStatus" not in line:
                print(f"{p.name}: not converted (unexpected shape): {line.strip()}", file=sys.stderr)
            out.append(line)
        p.write_text("\n".join(out) + "\n")
    print(f"{n} lines marked", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
