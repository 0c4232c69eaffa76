#include "cli/commands.h"
namespace assistd::cli {
void register_generate(CLI::App& app, int& exit_code) { (void)app; (void)exit_code; }
}  // namespace assistd::cli
