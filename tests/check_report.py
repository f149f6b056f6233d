"""Check a report folder: every SVG parses as XML, the HTML is self-contained and holds every plot."""
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
names = sys.argv[2].split(",")
for n in names:
    root = ET.parse(out / "plots" / f"{n}.svg").getroot()
    assert root.tag.endswith("svg"), root.tag
html = (out / "report.html").read_text()
for n in names:
    assert f'id="{n}"' in html, n
assert html.count("data:image/png;base64,") >= len(names)
assert not re.search(r'src="(?!data:)', html), "external asset in report.html"
print(f"ok svgs={len(names)}")
