//! API types of mqtt-operator (group `mqtt.operator.dev`, version `v1alpha1`) and their pure
//! validation. No IO: the operator, `check` and the broker share these.
#![forbid(unsafe_code)]
