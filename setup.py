"""setuptools driving CMake (pybind11's cmake_example pattern): `pip install --no-build-isolation .`
configures and builds csrc/ with the installed torch's LibTorch, then installs libtessera,
the headers and the CMake package inside the Python package."""
import glob
import os
import shutil
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
        pkg = os.path.join(ROOT, "python", "tessera")
        # `make build` has just built and installed everything in-tree; skip a second CMake run.
        if os.environ.get("TESSERA_SKIP_CMAKE") != "1":
            # The cmake next to this interpreter (pip's) first: the one that configured build/.
            here = os.path.join(os.path.dirname(sys.executable), "cmake")
            cmake = here if os.path.exists(here) else "cmake"
            build_dir = os.environ.get("TESSERA_BUILD_DIR", os.path.join(ROOT, "build"))
            tests = os.environ.get("TESSERA_BUILD_TESTS", "ON")
            subprocess.check_call([cmake, "-S", ROOT, "-B", build_dir, "-G", "Ninja",
                                   f"-DPython3_EXECUTABLE={sys.executable}", f"-DTESSERA_BUILD_TESTS={tests}"])
            subprocess.check_call([cmake, "--build", build_dir, "--parallel", str(os.cpu_count() or 2)])
            subprocess.check_call([cmake, "--install", build_dir, "--prefix", pkg])
        built = glob.glob(os.path.join(pkg, "_C*.so"))
        if not built:
            raise RuntimeError(f"tessera._C was not built in {pkg}; run `make build` or unset TESSERA_SKIP_CMAKE")
        dest = self.get_ext_fullpath(ext.name)
        if os.path.abspath(built[0]) != os.path.abspath(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy2(built[0], dest)
        # A non-editable build ships libtessera, headers and the CMake package next to _C.
        if not self.inplace and os.path.isdir(os.path.join(pkg, "lib")):
            self.copy_tree(os.path.join(pkg, "lib"), os.path.join(os.path.dirname(dest), "lib"))
            for extra in ("include", "share"):  # headers; the named variants (share/tessera/models)
                if os.path.isdir(os.path.join(pkg, extra)):
                    self.copy_tree(os.path.join(pkg, extra), os.path.join(os.path.dirname(dest), extra))


setup(ext_modules=[CMakeExtension("tessera._C")], cmdclass={"build_ext": CMakeBuild})
