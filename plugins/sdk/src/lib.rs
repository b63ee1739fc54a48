//! Write wasmq broker plugins in Rust.
//!
//! A plugin is a type that implements [`Plugin`] for one or more roles (router, ordering-key
//! selector, filter) and is exported with [`export!`]. The broker calls it with batches of
//! messages; the SDK loops over each batch and hands your code one zero-copy [`Message`] view at
//! a time. Build it for `wasm32-unknown-unknown` and upload the `.wasm`: the broker turns it into
//! a component of the `wasmq:plugin/plugin` world (`plugins/wit/plugin.wit`).
//!
//! ```
//! use wasmq_plugin_sdk::{export, Attachment, Fields, Message, Plugin, Role, Route};
//!
//! struct ByTenant { queues_per_tenant: u32 }
//!
//! impl Plugin for ByTenant {
//!     const ROLES: &'static [Role] = &[Role::Router];
//!     const NEEDS: Fields = Fields::PROPERTIES;
//!
//!     fn init(a: &Attachment) -> Result<Self, String> {
//!         Ok(Self { queues_per_tenant: a.parse("queues-per-tenant")?.unwrap_or(2) })
//!     }
//!
//!     fn route(&mut self, m: &Message<'_>, queues: u32) -> Route {
//!         match m.property("tenant") {
//!             Some(t) => Route::Queue((wasmq_plugin_sdk::key_hash(t) % u64::from(queues)) as u32),
//!             None => Route::Reject("no tenant".into()),
//!         }
//!     }
//! }
//!
//! export!(ByTenant);
//! ```
//!
//! Plugin logic is plain Rust: unit-test it natively with `cargo test` by calling `init` and the
//! role method on [`MessageBuf`]-built messages. Logging ([`log`]) and counters
//! ([`counter_add`]) go to the broker inside the sandbox and to stderr / nowhere natively.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "::wasmq_plugin_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

mod message;

use std::any::Any;
use std::cell::RefCell;

use bindings::exports::wasmq::plugin::{filter, key_selector, lifecycle, router};
pub use bindings::wasmq::plugin::host::Level;
pub use bindings::wasmq::plugin::types::{Attachment, Batch, Delivery, Fields, Manifest, OrderingKey, Role, Route};
pub use message::{Message, MessageBuf, Properties, batch_of, encode_property};

/// The version of the `wasmq:plugin` interface this SDK builds against.
pub const INTERFACE_VERSION: &str = "1.0.0";

/// A plugin. Implement the methods of the roles listed in [`Plugin::ROLES`]; the others are
/// never called (the broker attaches a plugin only in a role it declares).
pub trait Plugin: Sized + 'static {
    /// The roles this plugin can be attached in.
    const ROLES: &'static [Role];
    /// The message fields the plugin reads; the broker passes only these (timestamps always).
    const NEEDS: Fields;

    /// Builds the plugin's state for one attachment (topic, group, configuration). An error
    /// refuses the attachment with that message.
    ///
    /// # Errors
    /// A configuration the plugin cannot work with.
    fn init(attachment: &Attachment) -> Result<Self, String>;

    /// The fields this attachment reads, asked once after [`Plugin::init`]: [`Plugin::NEEDS`]
    /// by default. Return fewer when the configuration reads less (a filter on a property need
    /// not be passed bodies); anything beyond `NEEDS` is ignored.
    fn needs(&self) -> Fields {
        Self::NEEDS
    }

    /// Router: the queue for `message` in a topic of `queues` queues.
    fn route(&mut self, message: &Message<'_>, queues: u32) -> Route {
        let _ = (message, queues);
        panic!("this plugin is not a router")
    }

    /// Ordering-key selector: the key that orders `message`.
    fn ordering_key(&mut self, message: &Message<'_>) -> OrderingKey {
        let _ = message;
        panic!("this plugin is not an ordering-key selector")
    }

    /// Filter: whether `message` is delivered to the attached consumer group.
    fn filter(&mut self, message: &Message<'_>) -> Delivery {
        let _ = message;
        panic!("this plugin is not a filter")
    }
}

/// The broker's key hash (FNV-1a, 64 bit): [`OrderingKey::Hashed`] of this value orders like a
/// message key of the same bytes, and the broker maps a hash to queue `hash % queues`.
#[must_use]
pub fn key_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Attachment {
    /// A configuration value.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.config.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A configuration value parsed with [`std::str::FromStr`]; `Ok(None)` when absent.
    ///
    /// # Errors
    /// The value does not parse; the message names the key.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key).map(|v| v.parse().map_err(|e| format!("config {key}={v:?}: {e}"))).transpose()
    }

    /// An attachment for native unit tests.
    #[must_use]
    pub fn for_test(role: Role, config: &[(&str, &str)]) -> Self {
        Self {
            role,
            topic: "test".to_owned(),
            group: (role == Role::Filter).then(|| "test-group".to_owned()),
            config: config.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }
}

/// Writes a line to the broker's log (stderr when run natively).
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::wasmq::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Adds to a named counter in the plugin's stats (does nothing natively).
pub fn counter_add(name: &str, delta: u64) {
    #[cfg(target_arch = "wasm32")]
    bindings::wasmq::plugin::host::counter_add(name, delta);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (name, delta);
}

thread_local! {
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn with_state<P: Plugin, R>(f: impl FnOnce(&mut P) -> R) -> R {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let p = s.as_mut().and_then(|b| b.downcast_mut::<P>()).expect("the broker calls init before any batch");
        f(p)
    })
}

/// Glue between the generated bindings and a [`Plugin`]; used by [`export!`].
#[doc(hidden)]
#[derive(Debug)]
pub struct Adapter<P>(std::marker::PhantomData<P>);

/// Implemented by [`export!`] with the plugin crate's name and version.
#[doc(hidden)]
pub trait Described {
    const NAME: &'static str;
    const VERSION: &'static str;
}

impl<P: Plugin + Described> lifecycle::Guest for Adapter<P> {
    fn describe() -> Manifest {
        Manifest { name: P::NAME.to_owned(), version: P::VERSION.to_owned(), roles: P::ROLES.to_vec(), needs: P::NEEDS }
    }

    fn init(attachment: Attachment) -> Result<Fields, String> {
        #[cfg(target_arch = "wasm32")]
        std::panic::set_hook(Box::new(|info| log(Level::Error, &format!("panic: {info}"))));
        let p = P::init(&attachment)?;
        let needs = p.needs() & P::NEEDS;
        STATE.with(|s| *s.borrow_mut() = Some(Box::new(p)));
        Ok(needs)
    }
}

impl<P: Plugin + Described> router::Guest for Adapter<P> {
    fn route_batch(queues: u32, batch: Batch) -> Vec<Route> {
        with_state(|p: &mut P| Message::each(&batch).map(|m| p.route(&m, queues)).collect())
    }
}

impl<P: Plugin + Described> key_selector::Guest for Adapter<P> {
    fn key_batch(batch: Batch) -> Vec<OrderingKey> {
        with_state(|p: &mut P| Message::each(&batch).map(|m| p.ordering_key(&m)).collect())
    }
}

impl<P: Plugin + Described> filter::Guest for Adapter<P> {
    fn filter_batch(batch: Batch) -> Vec<Delivery> {
        with_state(|p: &mut P| Message::each(&batch).map(|m| p.filter(&m)).collect())
    }
}

/// Exports a [`Plugin`] type as the plugin's component exports. Its name and version in the
/// manifest are the crate's (`CARGO_PKG_NAME`, `CARGO_PKG_VERSION`).
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        impl $crate::Described for $plugin {
            const NAME: &'static str = env!("CARGO_PKG_NAME");
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }
        // Native builds (unit tests) do not export the component ABI.
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        type __WasmqPluginExport = $crate::Adapter<$plugin>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!(__WasmqPluginExport with_types_in $crate::bindings);
    };
}
