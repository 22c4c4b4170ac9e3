//! Mapping core errors onto the exception classes defined in Ruby
//! (lib/rack/objectspace/errors.rb), looked up lazily.

use magnus::{Error, ExceptionClass, Module, RClass, RModule, Ruby};
use objectspace_core::Error as CoreError;

pub type RbResult<T> = Result<T, Error>;

/// `Rack::Objectspace::<name>`, falling back to RuntimeError if Ruby did not define it.
fn class(ruby: &Ruby, name: &str) -> ExceptionClass {
    let found = ruby
        .class_object()
        .const_get::<_, RModule>("Rack")
        .and_then(|rack| rack.const_get::<_, RClass>("Objectspace"))
        .and_then(|os| os.const_get::<_, ExceptionClass>(name));
    found.unwrap_or_else(|_| ruby.exception_runtime_error())
}

/// Convert a core error once the GVL is held again.
pub fn to_ruby(ruby: &Ruby, err: CoreError) -> Error {
    let class = match &err {
        e if e.is_argument_error() => ruby.exception_arg_error(),
        CoreError::Parse { .. } => class(ruby, "ParseError"),
        CoreError::Store { .. } | CoreError::QueueFull { .. } => class(ruby, "StoreError"),
        _ => class(ruby, "Error"),
    };
    Error::new(class, err.to_string())
}

/// A Ruby ArgumentError.
pub fn argument(ruby: &Ruby, message: impl Into<String>) -> Error {
    Error::new(ruby.exception_arg_error(), message.into())
}
