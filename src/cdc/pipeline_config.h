#pragma once
// The pipeline file, shaped like Flink CDC 3's (`source`, `sink`, `route`,
// `transform`, `pipeline`, with its key names where the meaning is the same)
// plus a `graph` section, and the short form of the product brief (`sources:`
// and `sinks:` lists, `hosts`, `include_tables`). Every error names the file,
// the line and the key; unknown keys are errors; nothing is half-configured.
// Credentials: `password`, or `password-env: VAR`, or `password-file: PATH`.
#include <cstdint>
#include <string>
#include <vector>

#include "cdc/graph_mapping.h"
#include "common/result.h"

namespace assistd::cdc {

struct SourceConfig {
    enum class Type { kPostgres, kMySql };
    enum class StartupMode { kInitial, kLatestOffset, kSpecificOffset };
    Type type = Type::kPostgres;
    std::string name;  // the graph's position key for this source (default: "<type>@host:port/database")
    std::string host = "127.0.0.1";
    int port = 0;      // 0: the type's default
    std::string database;
    std::string username;
    std::string password;
    std::vector<std::string> tables;  // "schema.table" or "table"; empty: every table
    std::string slot_name;            // PostgreSQL (default "assistd")
    std::string publication;          // PostgreSQL (default "assistd")
    StartupMode startup = StartupMode::kInitial;
    std::string startup_offset;       // specific-offset: an LSN
};

struct PipelineConfig {
    std::string name = "assistd";
    std::vector<SourceConfig> sources;
    std::vector<TableMapping> tables;  // graph.nodes, with graph.edges folded in
    bool foreign_keys = true;          // graph.foreign-keys: edges from the source's foreign keys
    bool map_all = true;               // tables the graph section does not list are mapped by default
    std::string schema_change = "lenient";
    std::string state_dir;             // pipeline.state-dir: where the graph lives
};

// `text` is the file's contents; `file` names it in errors.
Result<PipelineConfig> parse_pipeline_config(const std::string& text, const std::string& file);
Result<PipelineConfig> load_pipeline_config(const std::string& path);

}  // namespace assistd::cdc
