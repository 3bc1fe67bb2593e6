//! WebSocket close codes used by the server.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The server is shutting down (SIGTERM).
pub const GOING_AWAY: u16 = 1001;
/// The client kept sending bad frames.
pub const POLICY: u16 = 1008;
/// A frame exceeded the server's frame limit.
pub const TOO_BIG: u16 = 1009;
/// The hello was missing or its token invalid, or the session was logged out.
pub const UNAUTHORIZED: u16 = 4001;
/// Another connection of the same device replaced this one.
pub const REPLACED: u16 = 4002;
/// No frame arrived within the presence timeout.
pub const HEARTBEAT_TIMEOUT: u16 = 4003;
/// The device could not keep up: its outbound queue stayed full.
pub const SLOW_CONSUMER: u16 = 4004;
