//! A batch reveal: several keys for one request (`POST /api/reveal`,
//! used by `keyhold exec`), all or nothing.
//!
//! Every key goes through the single reveal's own steps (`reveal.rs`):
//! the request is admitted once ([`Vault::admit_batch`]: the limiter's
//! verdict on its first cell, the caller, the `keys:reveal` scope), then
//! ([`Vault::reveal_batch`]) the limiter's verdict on the rest of its
//! cells, and each key is opened ([`Vault::open`]: load, provider limit,
//! version, expiry, decrypt). Only when every key opened is each one's
//! success record written ([`Vault::hand_over`], one record a key,
//! durable) and the keys given. When any key is refused, each refused
//! key's record says why, nothing is revealed, and each key that would
//! have opened is recorded withheld, outcome `forbidden` (none of them
//! left the server): every key asked for has its record.
//!
//! Not for: reading the request (see `http::reveal_batch`).

use super::reveal::{Opened, Revealed, Target};
use super::{Origin, Refusal, Vault};
use crate::access::Caller;

/// The most keys one batch may ask for.
pub(crate) const MAX_BATCH: usize = 32;

/// Why a batch revealed nothing.
#[derive(Debug)]
pub(crate) enum BatchRefusal {
    /// The request as a whole: rate limited, or the audit record could
    /// not be made durable.
    Whole(Refusal),
    /// These keys (by their place in the request, from 0) were refused,
    /// each recorded; the others were not revealed either.
    Items(Vec<(usize, Refusal)>),
}

impl Vault<'_> {
    /// Admits a batch reveal: the limiter's verdict on its first cell,
    /// the caller, the `keys:reveal` scope, recorded as one reveal
    /// attempt when refused (the keys asked for are not read yet).
    pub(crate) async fn admit_batch(
        &self,
        origin: &Origin,
        verdict: Result<(), u64>,
        token: Result<&str, Refusal>,
        on_caller: Option<&(dyn Fn(&str) + Send + Sync)>,
        purpose: Option<&str>,
    ) -> Result<Caller, Refusal> {
        let mut ev = self.event(
            origin,
            crate::audit::Action::Reveal,
            None,
            crate::audit::Outcome::Success,
        );
        ev.detail = Some(match purpose {
            Some(p) => format!("batch; for {p}"),
            None => "batch".into(),
        });
        let (caller, _) = self.admit(origin, verdict, token, on_caller, ev).await?;
        Ok(caller)
    }

    /// Reveals every key of `targets` for an admitted `caller`, or none.
    /// `rest` is the limiter's verdict on the batch's other cells (one a
    /// key past the first): refused, each key is counted rate-limited.
    pub(crate) async fn reveal_batch(
        &self,
        origin: &Origin,
        caller: &Caller,
        targets: &[Target],
        rest: Result<(), u64>,
        purpose: Option<&str>,
    ) -> Result<Vec<Revealed>, BatchRefusal> {
        let n = targets.len();
        let event = |i: usize, target: &Target| {
            let mut ev = self.reveal_event(origin, target, purpose, Some((i, n)));
            ev.caller = caller.name.clone();
            ev.caller_id = Some(caller.id);
            ev
        };
        if let Err(retry_after) = rest {
            metrics::counter!("keyhold_rate_limited_total").increment(n as u64);
            let mut refusal = Refusal::RateLimited(retry_after);
            for (i, target) in targets.iter().enumerate() {
                refusal = self
                    .count_refused(origin, event(i, target), Refusal::RateLimited(retry_after))
                    .await;
            }
            return Err(BatchRefusal::Whole(refusal));
        }
        let mut opened: Vec<Opened> = Vec::with_capacity(n);
        let mut refused = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            match self.open(origin, caller, target, event(i, target)).await {
                Ok(o) => opened.push(o),
                Err(r) => refused.push((i, r)),
            }
        }
        if let Some((first, why)) = refused.first() {
            // The keys that opened are withheld (their plaintext zeroized)
            // and each recorded, so a caller cannot learn which keys would
            // open, one bad item a batch, without a record of each key it
            // asked for.
            let why = format!(
                "withheld: key {} of the batch was refused ({}), so none was revealed",
                first + 1,
                why.outcome().as_str()
            );
            for o in opened {
                self.record_withheld(o.withhold(), &why).await;
            }
            return Err(BatchRefusal::Items(refused));
        }
        // Queued together (in order), so one commit of the audit writer
        // makes them all durable; any failure sends none.
        let handed =
            futures_util::future::join_all(opened.into_iter().map(|o| self.hand_over(o))).await;
        handed
            .into_iter()
            .collect::<Result<Vec<Revealed>, Refusal>>()
            .map_err(BatchRefusal::Whole)
    }

    /// Records a key of a refused batch that opened but was not handed
    /// over: outcome `forbidden` (it was not given), `why` in its detail.
    /// On a server it is coalesced per token, key and second, and takes
    /// nothing from the token's refusal budget (the refused key did); no
    /// reveal metric counts it (the refused key is counted).
    async fn record_withheld(&self, mut ev: crate::audit::AuditEvent, why: &str) {
        ev.outcome = crate::audit::Outcome::Forbidden;
        ev.detail = Some(match ev.detail.take() {
            Some(d) => format!("{d}; {why}"),
            None => why.to_string(),
        });
        match (self.coalescer, ev.caller_id) {
            (Some(c), Some(token)) => {
                let target = ev.key_id.map(|k| k.to_string()).unwrap_or_default();
                c.add(
                    &format!("token {token} withheld {target}"),
                    ev,
                    crate::time::now_us(),
                );
            }
            _ => {
                if let Err(e) = self.record_budgeted(ev, vec![]).await {
                    tracing::error!(error = %e, "could not record a withheld key of a refused batch");
                }
            }
        }
    }
}
