// assistd: one binary for serving, generating, benchmarking and model tools.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "common/cpu_features.h"

namespace assistd::cli {

sigset_t block_stop_signals() {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    return signals;
}

}  // namespace assistd::cli

int main(int argc, char** argv) {
    CLI::App app{"assistd: a runtime for AI assistants (OpenAI-compatible serving, CPU inference, replicated sessions)"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "assistd 0.1.0");
    int exit_code = 0;

    assistd::cli::register_generate(app, exit_code);
    assistd::cli::register_model(app, exit_code);
#ifdef ASSISTD_HAVE_SERVE
    assistd::cli::register_serve(app, exit_code);
    assistd::cli::register_apikey(app, exit_code);
#endif
#ifdef ASSISTD_HAVE_CLUSTER
    assistd::cli::register_dev_cluster(app, exit_code);
    assistd::cli::register_peer_cert(app, exit_code);
#endif
#ifdef ASSISTD_HAVE_CDC
    assistd::cli::register_pipeline(app, exit_code);
#endif
    CLI::App* bench = app.add_subcommand("bench", "Benchmarks that print figures");
    bench->require_subcommand(1);
    assistd::cli::register_bench_engine(*bench, exit_code);
    assistd::cli::register_bench_membw(*bench, exit_code);
#ifdef ASSISTD_HAVE_SERVE
    assistd::cli::register_bench_prefix(*bench, exit_code);
#endif
#ifdef ASSISTD_HAVE_STATE
    assistd::cli::register_bench_crdt(*bench, exit_code);
    assistd::cli::register_bench_sessions(*bench, exit_code);
#endif
    app.add_subcommand("cpu", "Print the CPU features the kernels use")->callback([] {
        std::printf("%s\n", assistd::cpu_features().describe().c_str());
    });

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? 0 : 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "assistd: %s\n", e.what());
        return 2;
    }
    return exit_code;
}
