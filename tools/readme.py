#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb (nbdev-readme needs quarto, which these machines lack).

Markdown cells are copied as they are; code cells become ```python blocks, without nbdev directives (`#| ...`).
`python tools/readme.py --check` exits 1 when README.md is out of date.
"""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent


def render() -> str:
    nb = json.loads((root/'nbs'/'index.ipynb').read_text())
    out = []
    for c in nb['cells']:
        src = ''.join(c['source']).strip('\n')
        if c['cell_type'] == 'markdown': out.append(src)
        elif c['cell_type'] == 'code':
            lines = [l for l in src.splitlines() if not l.startswith('#|')]
            if lines and not any(l.startswith('#| hide') for l in src.splitlines()): out.append('```python\n' + '\n'.join(lines) + '\n```')
    return '<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n' + '\n\n'.join(out) + '\n'


if __name__ == '__main__':
    text, dst = render(), root/'README.md'
    if '--check' in sys.argv:
        if not dst.exists() or dst.read_text() != text:
            print('README.md is out of date: run `python tools/readme.py`.'); sys.exit(1)
    else: dst.write_text(text)
