"""kmake.Make: ccache shared by every build dir, with objects that do not show it.

Real gcc and ccache on one translation unit, compiled as kbuild compiles it:
from the kbuild dir, with the source tree's absolute path in -I and in the
kernel's own -fmacro-prefix-map, plus the maps and variables Make adds.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pipeline.kmake import CONTAINER_LAYOUT, Make
from pipeline.layout import Layout

HEADER = "static inline const char *header_file(void) { return __FILE__; }\n"
SOURCE = ('#include <where.h>\n'
          'const char *source_file = __FILE__;\n'
          'const char *from_header(void) { return header_file(); }\n')


def build_dir(root: Path, cache: Path) -> Layout:
    layout = Layout(project=root, build=root / "build", cache=cache)
    (layout.tree / "include").mkdir(parents=True)
    (layout.tree / "include" / "where.h").write_text(HEADER)
    (layout.tree / "init.c").write_text(SOURCE)
    layout.kbuild.mkdir()
    return layout


def compile_object(make: Make) -> bytes:
    tree, kbuild = make.layout.tree, make.layout.kbuild
    argv = ["gcc", "-O2", "-c", f"-I{tree}/include", f"-fmacro-prefix-map={tree}/=",
            *make.relative_maps().split(), str(tree / "init.c"), "-o", "init.o"]
    if make.ccache:
        argv.insert(0, "ccache")
    subprocess.run(argv, cwd=kbuild, env={**os.environ, **make.env()}, check=True)
    return (kbuild / "init.o").read_bytes()


def ccache_stat(make: Make, name: str) -> int:
    out = subprocess.run(["ccache", "--print-stats"], env={**os.environ, **make.env()},
                         check=True, capture_output=True, text=True).stdout
    return sum(int(value) for key, value in (line.split("\t") for line in out.splitlines())
               if key == name)


def test_a_second_build_dir_hits_the_first_and_the_bytes_match_no_ccache(tmp_path):
    cache = tmp_path / "cache"
    first = Make(build_dir(tmp_path / "a", cache), 1, True, 0)
    second = Make(build_dir(tmp_path / "a-longer-path", cache), 1, True, 0)
    plain = Make(build_dir(tmp_path / "c", cache), 1, False, 0)

    from_first = compile_object(first)
    assert ccache_stat(first, "cache_miss") == 1
    from_second = compile_object(second)
    assert ccache_stat(second, "direct_cache_hit") == 1, "the second build dir missed"
    without = compile_object(plain)

    assert from_first == from_second == without
    assert b"include/where.h" in without and b"init.c" in without
    assert b"../" not in from_first and str(tmp_path).encode() not in from_first


def test_the_maps_are_the_same_in_every_build_dir_and_in_the_container(tmp_path):
    host = Make(Layout(project=tmp_path, build=tmp_path / "x" / "y", cache=tmp_path), 2, True, 0)
    container = Make(host.layout, 2, True, 0, container="toolchain:1")
    maps = "-fmacro-prefix-map=../src/linux/= -fmacro-prefix-map=../kmod/="
    assert host.relative_maps() == container.relative_maps() == maps
    assert f"KCPPFLAGS={maps}" in host.argv("bzImage")
    assert host.env()["CCACHE_BASEDIR"] == str(tmp_path / "x" / "y")
    assert container.env()["CCACHE_BASEDIR"] == str(CONTAINER_LAYOUT.build)
    without = Make(host.layout, 2, False, 0)
    assert "CCACHE_BASEDIR" not in without.env()
    assert not any(arg.startswith("KCPPFLAGS") for arg in without.argv("bzImage"))
