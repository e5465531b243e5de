//! Raft membership administration over rmqtt-raft's own gRPC service (the raft port): removing a
//! departing voter (`ChangeConfig` with a `RemoveNode` change, sent to the leader, following
//! `WrongLeader` answers) and asking peers who they think leads (`RequestId`).
//!
//! rmqtt-raft's types are private, so the wire format is reproduced here and pinned by unit
//! tests: gRPC messages wrap `inner` bytes; a `ConfChange` is protobuf (`eraftpb`), its context
//! and every answer are postcard-encoded serde enums whose variant order must match
//! rmqtt-raft 0.7.2 (`message.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tonic::codegen::http::uri::PathAndQuery;

/// How a `RemoveNode` change is tagged (rmqtt-raft `RemoveNodeType`; postcard: variant index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoveNodeType {
    /// The removed node quits raft when it applies its own removal.
    Normal,
    /// The removed node keeps running (used by rmqtt-raft's own re-join of a restarted node).
    Stale,
}

/// rmqtt-raft's `RaftResponse`, variant for variant (only the order and the payloads of the
/// variants we read matter to postcard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RaftResponse {
    /// Sent to a follower: who leads (0 = nobody known) and its raft address.
    WrongLeader {
        /// Leader id.
        leader_id: u64,
        /// Leader raft address.
        leader_addr: Option<String>,
    },
    /// Answer to an `AddNode`.
    JoinSuccess {
        /// Id given to the node.
        assigned_id: u64,
        /// Raft addresses of the members.
        peer_addrs: HashMap<u64, String>,
    },
    /// Leader id.
    RequestId {
        /// Leader id.
        leader_id: u64,
    },
    /// An error (e.g. "timeout" when the change did not commit in time).
    Error(String),
    /// Too busy.
    Busy,
    /// Query data.
    Response {
        /// The data.
        data: Vec<u8>,
    },
    /// Status: never answered to the calls made here (its payload is not reproduced).
    Status(Unsupported),
    /// Done.
    Ok,
}

/// A payload this module never decodes (uninhabited: decoding it fails, which the caller reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Unsupported {}

/// gRPC `ConfChange` / `Message` / `Proposal` wrapper (field 1).
#[derive(Clone, PartialEq, prost::Message)]
struct Wrapped {
    #[prost(bytes = "vec", tag = "1")]
    inner: Vec<u8>,
}

/// gRPC `RaftResponse` wrapper (field 2).
#[derive(Clone, PartialEq, prost::Message)]
struct WrappedResponse {
    #[prost(bytes = "vec", tag = "2")]
    inner: Vec<u8>,
}

/// gRPC `Empty`.
#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

/// gRPC `IdRequestReponse` (sic): code 0 Ok (data = leader id), 1 Error, 2 WrongLeader
/// (data = `(leader_id, Option<addr>)`).
#[derive(Clone, PartialEq, prost::Message)]
struct IdResponse {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

/// eraftpb `ConfChange` (fields as in rmqtt-raft-proto's eraftpb.proto).
#[derive(Clone, PartialEq, prost::Message)]
struct ConfChange {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int32, tag = "2")]
    change_type: i32,
    #[prost(uint64, tag = "3")]
    node_id: u64,
    #[prost(bytes = "vec", tag = "4")]
    context: Vec<u8>,
}

/// eraftpb `ConfChangeType::RemoveNode`.
const REMOVE_NODE: i32 = 1;

const CHANGE_CONFIG: &str = "/raftservice.RaftService/ChangeConfig";
const REQUEST_ID: &str = "/raftservice.RaftService/RequestId";

/// Why a raft administration call failed.
#[derive(Debug, thiserror::Error)]
pub enum RaftAdminError {
    /// Connecting or the gRPC call failed.
    #[error("raft gRPC {call} on {addr}: {message}")]
    Grpc {
        /// Which call.
        call: &'static str,
        /// Raft address.
        addr: String,
        /// What failed.
        message: String,
    },
    /// The answer did not decode.
    #[error("raft gRPC {call} on {addr}: undecodable answer: {message}")]
    Decode {
        /// Which call.
        call: &'static str,
        /// Raft address.
        addr: String,
        /// Decoder error.
        message: String,
    },
    /// No leader accepted the change before the deadline.
    #[error("removing raft node {id}: not done within {} ms (last: {last})", .after.as_millis())]
    Deadline {
        /// The node to remove.
        id: u64,
        /// The overall deadline.
        after: Duration,
        /// The last answer or error.
        last: String,
    },
}

/// Encodes the `ConfChange` that removes `node_id` (protobuf bytes, as `inner` of the gRPC call).
pub fn remove_change_bytes(node_id: u64, typ: RemoveNodeType) -> Vec<u8> {
    let context = postcard::to_stdvec(&typ).unwrap_or_default();
    prost::Message::encode_to_vec(&ConfChange {
        id: 0,
        change_type: REMOVE_NODE,
        node_id,
        context,
    })
}

/// Decodes a `ChangeConfig` answer's `inner` bytes.
pub fn decode_response(inner: &[u8]) -> Result<RaftResponse, postcard::Error> {
    postcard::from_bytes(inner)
}

async fn unary<Req, Resp>(
    addr: &str,
    call: &'static str,
    path: &'static str,
    request: Req,
    timeout: Duration,
) -> Result<Resp, RaftAdminError>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let grpc = |message: String| RaftAdminError::Grpc {
        call,
        addr: addr.to_owned(),
        message,
    };
    let work = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| grpc(e.to_string()))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect()
            .await
            .map_err(|e| grpc(format!("connect: {e}")))?;
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.map_err(|e| grpc(e.to_string()))?;
        let codec = tonic::codec::ProstCodec::<Req, Resp>::default();
        client
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|e| grpc(e.message().to_owned()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| grpc(format!("no answer within {} ms", timeout.as_millis())))?
}

/// Sends one `RemoveNode` change to the node at `addr` and returns its answer.
pub async fn change_remove(
    addr: &str,
    node_id: u64,
    typ: RemoveNodeType,
    timeout: Duration,
) -> Result<RaftResponse, RaftAdminError> {
    let answer: WrappedResponse = unary(
        addr,
        "ChangeConfig",
        CHANGE_CONFIG,
        Wrapped {
            inner: remove_change_bytes(node_id, typ),
        },
        timeout,
    )
    .await?;
    decode_response(&answer.inner).map_err(|e| RaftAdminError::Decode {
        call: "ChangeConfig",
        addr: addr.to_owned(),
        message: e.to_string(),
    })
}

/// Asks the node at `addr` who leads: `Some(id)` (the node itself when it leads), `None` when it
/// knows no leader.
pub async fn leader_seen_by(addr: &str, timeout: Duration) -> Result<Option<u64>, RaftAdminError> {
    let answer: IdResponse = unary(addr, "RequestId", REQUEST_ID, Empty {}, timeout).await?;
    let decode = |message: String| RaftAdminError::Decode {
        call: "RequestId",
        addr: addr.to_owned(),
        message,
    };
    let id = match answer.code {
        0 => postcard::from_bytes::<u64>(&answer.data).map_err(|e| decode(e.to_string()))?,
        2 => {
            postcard::from_bytes::<(u64, Option<String>)>(&answer.data)
                .map_err(|e| decode(e.to_string()))?
                .0
        }
        _ => 0,
    };
    Ok((id != 0).then_some(id))
}

/// Where to send the next attempt, after an answer (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// The change committed.
    Done,
    /// Send to this address next (the leader named by a follower).
    Redirect(String),
    /// Pause, then try the next known address.
    RetryNext,
}

/// Decides the next step from one answer (pure).
pub fn next_step(answer: &RaftResponse) -> NextStep {
    match answer {
        RaftResponse::Ok => NextStep::Done,
        RaftResponse::WrongLeader {
            leader_id,
            leader_addr: Some(addr),
        } if *leader_id != 0 => NextStep::Redirect(addr.clone()),
        _ => NextStep::RetryNext,
    }
}

/// Removes raft node `id` from the voter set: sends `RemoveNode(typ)` to `candidates` in turn
/// (following `WrongLeader` redirects) until the leader answers `Ok` or `deadline` passes. A
/// member that is already absent is removed again without effect (raft ignores it), so the call
/// is idempotent.
pub async fn remove_member(
    id: u64,
    typ: RemoveNodeType,
    candidates: &[String],
    per_call: Duration,
    deadline: Duration,
) -> Result<(), RaftAdminError> {
    let start = Instant::now();
    let mut last = String::from("no candidate address");
    let mut next: Option<String> = None;
    let mut index = 0usize;
    // Bounded by the deadline and, independently, by a number of attempts.
    for _ in 0..64 {
        if start.elapsed() >= deadline || candidates.is_empty() {
            break;
        }
        let addr = next.take().unwrap_or_else(|| {
            let a = candidates[index % candidates.len()].clone();
            index += 1;
            a
        });
        match change_remove(&addr, id, typ, per_call).await {
            Ok(answer) => match next_step(&answer) {
                NextStep::Done => {
                    log::info!("raft node {id} removed (answer from {addr})");
                    return Ok(());
                }
                NextStep::Redirect(leader) => {
                    last = format!("{addr}: wrong leader, redirected to {leader}");
                    next = Some(leader);
                    continue;
                }
                NextStep::RetryNext => last = format!("{addr}: {answer:?}"),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(RaftAdminError::Deadline {
        id,
        after: deadline,
        last,
    })
}

/// What one peer answered to `RequestId` (for [`may_start_raft`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderAnswer {
    /// The peer names this leader.
    Leader(u64),
    /// The peer knows no leader (an election is running).
    NoLeader,
    /// No answer (not running yet, or too slow).
    Unreachable,
}

/// Whether the raft plugin may start now (pure): no peer names this node as leader, and either
/// some peer names another leader to join, or no peer answers at all (the cluster is being
/// formed: the bootstrap node leads, the others find it later).
pub fn may_start_raft(own_id: u64, answers: &[LeaderAnswer]) -> bool {
    let named_me = answers.contains(&LeaderAnswer::Leader(own_id));
    let named_other = answers
        .iter()
        .any(|a| matches!(a, LeaderAnswer::Leader(id) if *id != own_id));
    let all_silent = answers.iter().all(|a| *a == LeaderAnswer::Unreachable);
    !named_me && (named_other || all_silent)
}

/// Waits (bounded by `deadline`) until [`may_start_raft`]: a node that restarts quickly after
/// leading finds its peers still naming it leader until they elect another one; rmqtt-raft would
/// then try to join itself before its raft server listens and exit (status 255). Returns how
/// long it waited.
pub async fn wait_until_not_named_leader(
    own_id: u64,
    peers: &[String],
    per_call: Duration,
    deadline: Duration,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < deadline {
        let mut answers = Vec::with_capacity(peers.len());
        for peer in peers {
            answers.push(match leader_seen_by(peer, per_call).await {
                Ok(Some(id)) => LeaderAnswer::Leader(id),
                Ok(None) => LeaderAnswer::NoLeader,
                Err(_) => LeaderAnswer::Unreachable,
            });
        }
        if may_start_raft(own_id, &answers) {
            return start.elapsed();
        }
        log::info!("raft peers answer {answers:?}; node {own_id} waits for another leader");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    log::warn!(
        "no raft leader other than this node ({own_id}) after {} ms; starting anyway",
        deadline.as_millis()
    );
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_node_type_context_is_the_postcard_variant_index() {
        assert_eq!(postcard::to_stdvec(&RemoveNodeType::Normal).unwrap(), [0]);
        assert_eq!(postcard::to_stdvec(&RemoveNodeType::Stale).unwrap(), [1]);
    }

    #[test]
    fn remove_change_is_the_eraftpb_conf_change() {
        // field 2 (change_type) = 1 RemoveNode, field 3 (node_id) = 4, field 4 (context) = [0]
        assert_eq!(
            remove_change_bytes(4, RemoveNodeType::Normal),
            [0x10, 0x01, 0x18, 0x04, 0x22, 0x01, 0x00]
        );
        assert_eq!(
            remove_change_bytes(300, RemoveNodeType::Stale),
            [0x10, 0x01, 0x18, 0xac, 0x02, 0x22, 0x01, 0x01]
        );
    }

    #[test]
    fn rmqtt_raft_core_reads_the_change_back() {
        use prost::Message as _;
        use rmqtt_raft_core::eraftpb::{ConfChange as Real, ConfChangeType};
        let real = Real::decode(remove_change_bytes(5, RemoveNodeType::Normal).as_slice()).unwrap();
        assert_eq!(real.get_change_type(), ConfChangeType::RemoveNode);
        assert_eq!(real.get_node_id(), 5);
        assert_eq!(real.get_context(), [0]);
    }

    #[test]
    fn answers_decode_with_rmqtt_raft_variant_order() {
        // Ok is variant 7, WrongLeader 0 {varint id, Option<String>}, Error 3 (String), Busy 4.
        assert_eq!(decode_response(&[7]).unwrap(), RaftResponse::Ok);
        assert_eq!(
            decode_response(&[0, 2, 1, 3, b'a', b':', b'1']).unwrap(),
            RaftResponse::WrongLeader {
                leader_id: 2,
                leader_addr: Some("a:1".into())
            }
        );
        assert_eq!(
            decode_response(&[0, 0, 0]).unwrap(),
            RaftResponse::WrongLeader {
                leader_id: 0,
                leader_addr: None
            }
        );
        assert_eq!(
            decode_response(&[3, 7, b't', b'i', b'm', b'e', b'o', b'u', b't']).unwrap(),
            RaftResponse::Error("timeout".into())
        );
        assert_eq!(decode_response(&[4]).unwrap(), RaftResponse::Busy);
        assert!(decode_response(&[6, 1]).is_err());
    }

    #[test]
    fn raft_starts_once_another_leader_is_named_or_nobody_answers() {
        use LeaderAnswer::{Leader, NoLeader, Unreachable};
        // Bootstrap: nobody runs yet.
        assert!(may_start_raft(1, &[Unreachable, Unreachable]));
        assert!(may_start_raft(1, &[]));
        // Another leader to join.
        assert!(may_start_raft(1, &[Leader(2), Unreachable]));
        assert!(may_start_raft(3, &[Leader(1), Leader(1)]));
        // A peer still names this node (it led before its restart): wait.
        assert!(!may_start_raft(1, &[Leader(1), Leader(2)]));
        assert!(!may_start_raft(1, &[Unreachable, Leader(1)]));
        // An election is running: wait for its result.
        assert!(!may_start_raft(1, &[NoLeader, Unreachable]));
        assert!(!may_start_raft(1, &[NoLeader, NoLeader]));
    }

    #[test]
    fn the_next_step_follows_the_named_leader_and_retries_otherwise() {
        assert_eq!(next_step(&RaftResponse::Ok), NextStep::Done);
        assert_eq!(
            next_step(&RaftResponse::WrongLeader {
                leader_id: 3,
                leader_addr: Some("h:5363".into())
            }),
            NextStep::Redirect("h:5363".into())
        );
        for unknown in [
            RaftResponse::WrongLeader {
                leader_id: 0,
                leader_addr: Some("h:5363".into()),
            },
            RaftResponse::WrongLeader {
                leader_id: 3,
                leader_addr: None,
            },
            RaftResponse::Error("timeout".into()),
            RaftResponse::Busy,
        ] {
            assert_eq!(next_step(&unknown), NextStep::RetryNext, "{unknown:?}");
        }
    }
}
