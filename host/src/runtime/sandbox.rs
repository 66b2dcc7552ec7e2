//! One attempt inside the sandbox: a fresh store and instance per call, with
//! its limits, deadline and capabilities, dropped when the call ends.
//!
//! [`HostState`] is the `T` of each `Store<T>`: the locked-down WASI context
//! (no preopened directories, no environment, no inherited stdio, no
//! network), the capabilities of the attempt, the memory limiter, and the
//! signals [`failure::classify`](super::failure::classify) reads afterwards.

use super::failure::{Interruption, MemoryRefusal, Signals};
use super::guest_output::{GuestOutput, Stream};
use crate::capabilities::Caller;
use crate::capabilities::admin::Admin;
use crate::capabilities::host_api::HostApi;
use crate::capabilities::http::HttpPolicy;
use crate::capabilities::models::Models;
use crate::capabilities::submit::Submit;
use crate::capabilities::tasks::TaskHost;
use crate::capabilities::vectors::Vectors;
use crate::capabilities::{Grants, Services};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::Notify;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Cancels a running or waiting attempt. Cheap to clone; every clone sees
/// the same cancellation.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<CancelInner>);

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once [`cancel`](Self::cancel) has been called.
    pub async fn cancelled(&self) {
        let notified = self.0.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_cancelled() {
            return;
        }
        notified.await;
    }
}

/// Caps a store's linear memory and tables, and remembers a refusal so the
/// failure is reported as `out_of_memory` rather than a generic trap.
#[derive(Debug)]
pub struct MemoryLimiter {
    cap_bytes: usize,
    refused: Option<MemoryRefusal>,
    /// The largest linear memory granted, bytes.
    peak_bytes: usize,
}

/// Table elements one instance may have (function references).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl MemoryLimiter {
    pub fn new(cap_bytes: usize) -> Self {
        MemoryLimiter {
            cap_bytes,
            refused: None,
            peak_bytes: 0,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap_bytes {
            self.refused = Some(MemoryRefusal {
                desired_bytes: desired,
                cap_bytes: self.cap_bytes,
            });
            // An error (not `Ok(false)`) traps at the `memory.grow`: the guest
            // cannot catch the refusal and keep asking.
            return Err(wasmtime::format_err!(
                "memory cap of {} bytes reached",
                self.cap_bytes
            ));
        }
        self.peak_bytes = self.peak_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// What one attempt's store is set up with.
pub struct AttemptSetup {
    pub caller: Caller,
    pub config: Arc<BTreeMap<String, String>>,
    pub grants: Grants,
    pub services: Services,
    pub memory_cap_bytes: usize,
    pub deadline: Instant,
    pub cancel: CancelToken,
    /// The scheduler's side: progress, children, housekeeping.
    pub tasks: Arc<dyn TaskHost>,
}

/// The data of one attempt's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    http_ctx: WasiHttpCtx,
    pub(super) http: HttpPolicy,
    pub(super) host_api: HostApi,
    pub(super) vectors: Vectors,
    pub(super) admin: Admin,
    pub(super) models: Models,
    limiter: MemoryLimiter,
    deadline: Instant,
    cancel: CancelToken,
    interruption: Option<Interruption>,
    stderr: GuestOutput,
    stdout: GuestOutput,
}

impl HostState {
    /// Builds an attempt's store, with limits and the deadline callback set.
    pub fn new_store(
        engine: &wasmtime::Engine,
        setup: AttemptSetup,
        fuel: Option<u64>,
    ) -> Store<HostState> {
        let AttemptSetup {
            caller,
            config,
            grants,
            services,
            memory_cap_bytes,
            deadline,
            cancel,
            tasks,
        } = setup;
        let stdout = GuestOutput::new(
            Stream::Stdout,
            caller.plugin.clone(),
            caller.task_id.clone(),
        );
        let stderr = GuestOutput::new(
            Stream::Stderr,
            caller.plugin.clone(),
            caller.task_id.clone(),
        );
        // No preopens, no env, no args, no network, no inherited stdio.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            http_ctx: WasiHttpCtx::new(),
            http: HttpPolicy::new(
                caller.clone(),
                grants.http.clone(),
                deadline,
                services.http.clone(),
            ),
            host_api: HostApi::new(
                caller.clone(),
                config,
                tasks.clone(),
                Submit::new(
                    grants.submit.clone(),
                    grants.children,
                    grants.child_rate.clone(),
                ),
            ),
            vectors: Vectors::new(
                caller.clone(),
                services.vectors.clone().filter(|_| grants.vectors),
                services.breakers.clone(),
            )
            .scoped(grants.vector_scope.clone()),
            models: Models::new(
                caller.clone(),
                grants.models.clone(),
                services.models.clone(),
                deadline,
                {
                    let cancel = cancel.clone();
                    Arc::new(move || cancel.is_cancelled())
                },
            ),
            admin: Admin::new(caller, grants.admin, tasks, services.vectors.clone()),
            limiter: MemoryLimiter::new(memory_cap_bytes),
            deadline,
            cancel,
            interruption: None,
            stderr,
            stdout,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        // Fuel metering is on engine-wide; an attempt without a budget gets
        // the most there is. `set_fuel` only fails when metering is off.
        let _ = store.set_fuel(fuel.unwrap_or(u64::MAX));
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if state.cancel.is_cancelled() {
                state.interruption = Some(Interruption::Cancelled);
                return Ok(UpdateDeadline::Interrupt);
            }
            if Instant::now() >= state.deadline {
                state.interruption = Some(Interruption::Timeout);
                return Ok(UpdateDeadline::Interrupt);
            }
            // Yield at every tick: a spinning guest hands its worker thread
            // back to the executor instead of blocking it until the deadline.
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        store
    }

    /// Ends the attempt's bookkeeping and returns what classification needs.
    pub fn finish(&mut self) -> Signals {
        self.host_api.finish();
        self.stdout.finish();
        Signals {
            interruption: self.interruption,
            memory_refused: self.limiter.refused,
            stderr_tail: self.stderr.finish(),
        }
    }

    /// The largest linear memory the attempt had, bytes.
    pub fn peak_memory(&self) -> usize {
        self.limiter.peak_bytes
    }

    /// Records an interruption observed outside the guest (a host call that
    /// outlived the deadline, or a cancel while the guest was in a host call).
    pub fn interrupted(&mut self, why: Interruption) {
        self.interruption.get_or_insert(why);
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}
