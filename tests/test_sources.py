"""The package, tools, configs and tests compile without warnings (an invalid escape
sequence in a docstring's equation is a SyntaxWarning, and an error in a later Python)."""
import pathlib
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_sources_compile_without_warnings():
    sources = sorted(p for d in ('cbam_mmdet', 'tools', 'configs', 'tests')
                     for p in (ROOT / d).rglob('*.py'))
    assert len(sources) > 50
    failed = []
    for path in sources:
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            try:
                compile(path.read_text(), str(path), 'exec')
            except (SyntaxError, Warning) as e:
                failed.append(f'{path.relative_to(ROOT)}: {e}')
    assert not failed, '\n'.join(failed)
