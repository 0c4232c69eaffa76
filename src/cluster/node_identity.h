#pragma once
// A node's identity: a random 64-bit node id drawn once and kept in the state
// directory, and an incarnation counted up at every start. The CRDT replica id
// is derived from both, so concurrent writers on different nodes never share
// one, and neither do two lives of the same node: a write that a crash took
// from the local log before it was synced (but after a peer saw it) can never
// be confused with a later, different write of the same lamport.
#include <cstdint>
#include <string>

#include "common/result.h"

namespace assistd::cluster {

using NodeId = uint64_t;

struct NodeIdentity {
    NodeId node_id = 0;
    uint64_t incarnation = 0;  // 1 on the first start
    uint64_t replica_id = 0;   // for the session store: replica_id_for(node_id, incarnation)
};

// Non-zero, and a different value for every (node, incarnation).
uint64_t replica_id_for(NodeId node_id, uint64_t incarnation);

// Reads <state_dir>/node-id (creating it with `fresh_node_id` when absent),
// counts the incarnation up and writes the file back before returning.
// `fresh_node_id` comes from the caller's random source and must be non-zero.
Result<NodeIdentity> load_node_identity(const std::string& state_dir, NodeId fresh_node_id);
// The same with an id the operator chose (--node-id): a state directory that
// already belongs to another node is an error, not silently taken over.
Result<NodeIdentity> load_node_identity_as(const std::string& state_dir, NodeId node_id);

// The id a command-line --node-id names: 1 to 16 hex digits, not zero.
Result<NodeId> parse_node_id(const std::string& text);
std::string format_node_id(NodeId id);
// --node-id as operators give it: 1 to 16 hex digits are the id itself; any
// other name of 1 to 253 characters of [A-Za-z0-9._-] (a pod name) is hashed
// to a non-zero id, the same on every start.
Result<NodeId> node_id_from_name(const std::string& name);

}  // namespace assistd::cluster
