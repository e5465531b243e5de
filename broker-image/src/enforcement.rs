//! Our rmqtt hook handler: certificate identity and revocation at CONNECT, the ACL on PUBLISH,
//! SUBSCRIBE and will messages.
//!
//! - `ClientAuthenticate`: TLS clients must present a certificate (the TLS layer already verified
//!   it against the clients CA and its validity period) with a CN; the engine replaced the MQTT
//!   username with that CN (`cert_cn_as_username`), and we refuse when they still differ (no CN).
//!   A revoked serial, or a will message the ACL does not allow, refuses the CONNECT with
//!   "not authorized" (MQTT 5: 0x87, 3.1.1: 0x05).
//! - `MessagePublishCheckAcl`: a denied publish is refused with PUBACK/PUBREC 0x87 (MQTT 5); for
//!   3.1.1 the engine acknowledges and drops it, as MQTT-3.3.5-2 allows.
//! - `ClientSubscribeCheckAcl`: a denied filter gets SUBACK 0x87 (MQTT 5) / 0x80 (3.1.1).

use std::sync::Arc;

use async_trait::async_trait;
use rmqtt::codec::types::QoS;
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::session::Session;
use rmqtt::types::{
    AuthResult, ConnectInfo, LastWill, ListenerId, PublishAclResult, SubscribeAclResult,
};

use crate::access::Subject;
use crate::live::{Counters, Live};

/// The hook handler. One instance is registered for each hook type it serves.
pub struct Enforcer {
    live: Arc<Live>,
    /// Listener id of the plain (no TLS) listener, if enabled.
    plain_listener: Option<ListenerId>,
    allow_anonymous: bool,
}

impl Enforcer {
    /// A handler over the shared live state.
    pub fn new(live: Arc<Live>, plain_listener: Option<ListenerId>, allow_anonymous: bool) -> Self {
        Self {
            live,
            plain_listener,
            allow_anonymous,
        }
    }

    fn refuse(&self, why: &str, ci: &ConnectInfo) -> AuthResult {
        Counters::inc(&self.live.counters.auth_failures);
        log::info!(
            "refused CONNECT from {:?} client_id {:?}: {why}",
            ci.id().remote_addr,
            ci.client_id()
        );
        AuthResult::NotAuthorized
    }

    fn authenticate(&self, ci: &ConnectInfo) -> AuthResult {
        let subject_name;
        let subject = if Some(ci.id().lid) == self.plain_listener {
            if !self.allow_anonymous {
                return self.refuse("plain listener without allowAnonymous", ci);
            }
            Subject::Anonymous
        } else {
            let Some(cert) = ci.cert() else {
                return self.refuse("no client certificate", ci);
            };
            let Some(cn) = cert.common_name.as_deref() else {
                return self.refuse("client certificate has no CN", ci);
            };
            if ci.username().map(|u| u.as_ref()) != Some(cn) {
                return self.refuse("username does not match certificate CN", ci);
            }
            let serial = cert
                .serial
                .as_deref()
                .and_then(contract::config::normalize_serial);
            match serial {
                None => return self.refuse("client certificate has no serial", ci),
                Some(serial) if self.live.revoked().serials.contains(&serial) => {
                    Counters::inc(&self.live.counters.auth_failures_revoked);
                    return self.refuse("certificate serial is revoked", ci);
                }
                Some(_) => {}
            }
            subject_name = cn.to_owned();
            Subject::Device(&subject_name)
        };
        if let Some(will) = ci.last_will() {
            let (topic, qos, retain) = match will {
                LastWill::V3(w) => (w.topic.clone(), w.qos, w.retain),
                LastWill::V5(w) => (w.topic.clone(), w.qos, w.retain),
            };
            // A 3.1.1 will topic may carry `?k=v` user properties (an rmqtt extension); the ACL
            // applies to the topic part.
            let topic = topic.split('?').next().unwrap_or_default();
            if !self
                .live
                .policy()
                .allow_publish(subject, topic, qos.value(), retain)
            {
                Counters::inc(&self.live.counters.acl_denies_will);
                return self.refuse("will message not allowed by the ACL", ci);
            }
        }
        AuthResult::Allow(false, None)
    }

    fn subject_of<'a>(&self, session: &'a Session) -> Subject<'a> {
        if Some(session.id.lid) == self.plain_listener {
            return Subject::Anonymous;
        }
        match session.id.username.as_ref() {
            Some(name) => Subject::Device(name.as_ref()),
            None => Subject::Anonymous,
        }
    }
}

fn qos_value(q: QoS) -> u8 {
    q.value()
}

#[async_trait]
impl Handler for Enforcer {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(ci) => {
                (false, Some(HookResult::AuthResult(self.authenticate(ci))))
            }
            Parameter::ClientSubscribeCheckAcl(session, sub) => {
                let subject = self.subject_of(session);
                let qos = sub.opts.qos();
                // The engine strips `$share/<group>/` into `opts`; strip defensively too so a
                // shared filter is always judged by the filter it matches with.
                // An unparsable filter is denied.
                let allowed = contract::topic::parse_filter(&sub.topic_filter).is_ok_and(|f| {
                    self.live
                        .policy()
                        .allow_subscribe(subject, f.filter, qos_value(qos))
                });
                if allowed {
                    (
                        true,
                        Some(HookResult::SubscribeAclResult(
                            SubscribeAclResult::new_success(qos, None),
                        )),
                    )
                } else {
                    Counters::inc(&self.live.counters.acl_denies_subscribe);
                    (
                        false,
                        Some(HookResult::SubscribeAclResult(
                            SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized),
                        )),
                    )
                }
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                let subject = self.subject_of(session);
                let allowed = self.live.policy().allow_publish(
                    subject,
                    &publish.topic,
                    qos_value(publish.qos),
                    publish.retain,
                );
                if allowed {
                    (
                        true,
                        Some(HookResult::PublishAclResult(PublishAclResult::allow())),
                    )
                } else {
                    Counters::inc(&self.live.counters.acl_denies_publish);
                    (
                        false,
                        Some(HookResult::PublishAclResult(PublishAclResult::rejected(
                            false, None,
                        ))),
                    )
                }
            }
            _ => (true, acc),
        }
    }
}
