"""setuptools driving CMake (pybind11's cmake_example pattern): `pip install --no-build-isolation .`
configures and builds csrc/ with the installed torch's LibTorch, then installs libtessera,
the headers and the CMake package inside the Python package."""
import os
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        if os.environ.get("TESSERA_SKIP_CMAKE") == "1":
            return  # `make build` has just built and installed everything in-tree
        # The cmake next to this interpreter (pip's) first: the one that configured build/.
        here = os.path.join(os.path.dirname(sys.executable), "cmake")
        cmake = here if os.path.exists(here) else "cmake"
        build_dir = os.environ.get("TESSERA_BUILD_DIR", os.path.join(ROOT, "build"))
        tests = os.environ.get("TESSERA_BUILD_TESTS", "ON")
        configure = [cmake, "-S", ROOT, "-B", build_dir, "-G", "Ninja", f"-DPython3_EXECUTABLE={sys.executable}",
                     f"-DTESSERA_BUILD_TESTS={tests}"]
        subprocess.check_call(configure)
        subprocess.check_call([cmake, "--build", build_dir, "--parallel", str(os.cpu_count() or 2)])
        pkg = os.path.join(ROOT, "python", "tessera")
        subprocess.check_call([cmake, "--install", build_dir, "--prefix", pkg])
        # A non-editable build copies the freshly built package files into build_lib.
        if not self.inplace:
            dest = os.path.join(os.path.abspath(self.build_lib), "tessera")
            self.copy_tree(pkg, dest)


setup(ext_modules=[CMakeExtension("tessera._C")], cmdclass={"build_ext": CMakeBuild})
