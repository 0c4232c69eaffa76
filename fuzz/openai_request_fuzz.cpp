// The OpenAI request handling on arbitrary bodies, routes and headers: every
// input gets an answer (2xx, or 4xx/5xx with OpenAI error JSON), never a
// crash. Runs against a real scheduler on a tiny random model; generations
// that start are cancelled at once, so the fuzzer exercises the parsing and
// validation, and the cancellation path, not the model.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "engine/engine.h"
#include "engine/random_model.h"
#include "serve/metrics.h"
#include "serve/openai_routes.h"
#include "serve/scheduler.h"

namespace {

using namespace assistd;

struct Harness {
    std::unique_ptr<engine::Model> model;
    std::unique_ptr<serve::ServeMetrics> metrics;
    std::unique_ptr<serve::Scheduler> scheduler;
    std::unique_ptr<serve::OpenAiRoutes> routes;

    Harness() {
        const std::string path =
            (std::filesystem::temp_directory_path() / ("assistd-fuzz-" + std::to_string(::getpid()) + ".gguf")).string();
        auto spec = engine::random_model_shape("tiny-llama");
        if (!spec || !engine::write_random_model(*spec, path).ok()) std::abort();
        engine::ModelParams p;
        p.path = path;
        p.n_threads = 1;
        p.n_ctx = 256;
        p.max_sequences = 4;
        auto m = engine::Model::load(p);
        std::filesystem::remove(path);  // mapped: the data stays until exit
        if (!m.ok()) std::abort();
        model = std::move(*m);
        metrics = std::make_unique<serve::ServeMetrics>();
        serve::SchedulerConfig sc;
        sc.max_running = 4;
        sc.max_queue = 8;
        sc.fixed_precision = engine::Precision::kFP32;
        scheduler = std::make_unique<serve::Scheduler>(*model, sc, SystemClock::instance(), metrics.get());
        scheduler->start();
        serve::OpenAiRoutesConfig rc;
        rc.model_id = "tiny";
        rc.default_max_tokens = 4;
        routes = std::make_unique<serve::OpenAiRoutes>(*model, *scheduler, *metrics, SystemClock::instance(), rc);
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Harness h;
    if (size == 0) return 0;
    // First byte picks the route and method; the rest is the body.
    static const char* const kTargets[] = {"/v1/chat/completions", "/v1/completions", "/v1/models",
                                           "/v1/models/tiny", "/healthz", "/readyz", "/v1/sessions/x", "/nope"};
    serve::HttpRequest req;
    req.target = kTargets[data[0] % 8];
    req.method = (data[0] & 0x80) ? "GET" : "POST";
    req.body.assign(reinterpret_cast<const char*>(data + 1), size - 1);
    req.headers.push_back({"Content-Type", "application/json"});
    serve::HttpResponse res = h.routes->handle(req);
    if (res.async) res.async->cancel();
    if (res.status < 200 || res.status > 599) std::abort();
    if (res.status >= 400 && !res.async) {
        // Errors are OpenAI error objects.
        auto j = nlohmann::json::parse(res.body, nullptr, false);
        if (j.is_discarded() || !j.contains("error") || !j["error"].contains("message")) std::abort();
    }
    return 0;
}
