#pragma once
// A PostgreSQL source: logical replication with the pgoutput plugin over
// libpq. It checks wal_level, creates the publication and the replication
// slot when missing, takes the initial snapshot from the slot's exported
// snapshot (every row once, at the slot's consistent point, with no lock and
// no watermark needed: the stream continues exactly where the snapshot is),
// then streams committed transactions and tells the server how far the graph
// has durably applied (standby status updates), so the slot releases WAL.
// Column names come from the stream's Relation messages; primary and foreign
// keys from the catalog.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cdc/change.h"
#include "cdc/graph_mapping.h"
#include "cdc/pipeline_config.h"
#include "common/result.h"

namespace assistd::cdc {

class PostgresSource {
  public:
    // `resume`: the position the graph holds for this source (nullopt: never
    // started, so the startup mode decides).
    static Result<std::unique_ptr<PostgresSource>> open(const SourceConfig& config,
                                                        std::optional<std::string> resume);
    ~PostgresSource();
    PostgresSource(const PostgresSource&) = delete;
    PostgresSource& operator=(const PostgresSource&) = delete;

    // The foreign keys among the published tables (for the default edges).
    const std::vector<std::pair<std::string, ForeignKey>>& foreign_keys() const { return foreign_keys_; }

    // The next committed transaction (the initial snapshot first, as one), or
    // nullopt when none arrived within timeout_ms. An error ends the source.
    Result<std::optional<SourceTransaction>> next(int timeout_ms);
    // The graph holds everything up to `position` durably: the slot may advance.
    void confirm(const std::string& position);

    struct Impl;

  private:
    explicit PostgresSource(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
    std::vector<std::pair<std::string, ForeignKey>> foreign_keys_;  // (table, key)
};

}  // namespace assistd::cdc
