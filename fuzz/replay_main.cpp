// fuzz_replay TARGET PATH...: runs the harness TARGET (a fuzz_<target>.cpp linked in) on every
// file PATH names, or every file inside a folder PATH, as libFuzzer would run one input. ctest
// replays fuzz/regressions/<target>/ with it, so a fixed finding stays fixed in every build,
// sanitized or not, without libFuzzer or clang.
//
// Each input runs on a thread with a 1 MiB stack (libFuzzer's main thread has 8 MiB), so a
// stack-depth bug shows with a small committed input.
#include "fuzz_target.h"

#include <pthread.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <vector>

namespace fs = std::filesystem;

namespace tessera::fuzz {

static std::map<std::string, Body>& targets() {
  static std::map<std::string, Body> t;
  return t;
}

bool register_target(const char* name, Body body) {
  targets()[name] = body;
  return true;
}

}  // namespace tessera::fuzz

namespace {

struct Job {
  tessera::fuzz::Body body;
  std::string bytes;
};

void* run_job(void* arg) {
  auto* job = static_cast<Job*>(arg);
  tessera::fuzz::run_one(job->body, reinterpret_cast<const uint8_t*>(job->bytes.data()),
                         job->bytes.size());
  return nullptr;
}

void run_on_small_stack(Job& job) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, size_t(1) << 20);
  pthread_t thread;
  if (pthread_create(&thread, &attr, run_job, &job) != 0) {
    std::cerr << "fuzz_replay: cannot start a thread\n";
    std::exit(2);
  }
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
}

}  // namespace

int main(int argc, char** argv) {
  auto& targets = tessera::fuzz::targets();
  if (argc < 2 || !targets.count(argv[1])) {
    std::cerr << "usage: fuzz_replay TARGET [FILE|DIR]...\ntargets:";
    for (const auto& [name, body] : targets) std::cerr << ' ' << name;
    std::cerr << '\n';
    return 2;
  }
  std::vector<fs::path> files;
  for (int i = 2; i < argc; ++i) {
    const fs::path p(argv[i]);
    if (fs::is_directory(p)) {
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path());
    } else if (fs::exists(p)) {
      files.push_back(p);
    } else {
      std::cerr << "fuzz_replay: no such file or folder: " << p << '\n';
      return 2;
    }
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    Job job{targets[argv[1]], std::string(std::istreambuf_iterator<char>(in), {})};
    std::cout << "replay " << argv[1] << ": " << f.filename().string() << " (" << job.bytes.size()
              << " bytes)" << std::endl;
    run_on_small_stack(job);
  }
  std::cout << "fuzz_replay " << argv[1] << ": " << files.size() << " inputs, no finding\n";
  return 0;
}
