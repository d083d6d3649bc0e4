//! Shutting down on purpose: every task holds a [`Shutdown`] and stops when
//! it fires, so the store is committed and the last ACKs sent before exit.

use tokio::sync::watch;

/// Fires once; clone it into every task.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Held by whoever decides to stop (signal handler, test, demo).
pub struct ShutdownTrigger(watch::Sender<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has been requested (or its trigger dropped).
    pub async fn fired(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}
