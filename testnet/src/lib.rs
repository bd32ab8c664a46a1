//! agora-testnet: helpers shared by the local test networks, the scenario
//! harness and the benchmark drivers under `testnet/`.

pub mod scenario;
