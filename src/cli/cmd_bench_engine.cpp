#include "cli/commands.h"
namespace assistd::cli {
void register_bench_engine(CLI::App& app, int& exit_code) { (void)app; (void)exit_code; }
}  // namespace assistd::cli
