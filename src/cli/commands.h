#pragma once
// Each `assistd` subcommand lives in its own cmd_*.cpp and registers itself
// on the CLI11 app here. A command's callback sets the exit status through
// the int it is given: 0 ok, 1 a check failed, 2 bad input or usage.
#include <csignal>

#include <CLI/CLI.hpp>

namespace assistd::cli {

void register_generate(CLI::App& app, int& exit_code);
void register_model(CLI::App& app, int& exit_code);
void register_serve(CLI::App& app, int& exit_code);
void register_apikey(CLI::App& app, int& exit_code);
void register_dev_cluster(CLI::App& app, int& exit_code);
void register_peer_cert(CLI::App& app, int& exit_code);
void register_pipeline(CLI::App& app, int& exit_code);  // `pipeline run` and `graph query`
void register_bench_prefix(CLI::App& bench, int& exit_code);
void register_bench_engine(CLI::App& bench, int& exit_code);
void register_bench_membw(CLI::App& bench, int& exit_code);
void register_bench_crdt(CLI::App& bench, int& exit_code);
void register_bench_sessions(CLI::App& bench, int& exit_code);

// Blocks SIGTERM and SIGINT in the calling thread, and so in every thread it
// starts afterwards; returns that set for sigwait. Call before any thread starts.
sigset_t block_stop_signals();

}  // namespace assistd::cli
