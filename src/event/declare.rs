//! Each payload object is declared once, with `payload_object!`: a line per field gives its
//! type, how it is normalized and the payload key(s) it comes from. The struct (fields in
//! that order, then `extra`), the shape the reader fills (its keys sorted as Comm100 sends
//! them) and the normalizer (taking each key by its place in the shape) follow from it.

/// How the payload key of a field is read, by the field's normalizer: nested objects are
/// read against their shape, everything else as plain JSON.
macro_rules! kind_of {
    (custom_fields) => {
        Kind::Objects(&CustomField::SHAPE)
    };
    (custom_variables) => {
        Kind::Objects(&CustomVariable::SHAPE)
    };
    (attachments) => {
        Kind::Objects(&Attachment::SHAPE)
    };
    (wrapup) => {
        Kind::Object(&Wrapup::SHAPE)
    };
    ($rule:ident) => {
        Kind::Json
    };
}

/// Declares a payload object: `field: Type = rule("key", …),` per field, where `rule` is the
/// [`Fields`] method that normalizes the key(s) into the field; `derived` fields are set by
/// the `then` block from the others.
macro_rules! payload_object {
    (
        $(#[$meta:meta])*
        $name:ident {
            $($field:ident: $ty:ty = $rule:ident($($key:literal),*),)+
        }
        $(then |$object:ident| $then:block)?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct $name<'a> {
            $(pub $field: $ty,)+
            #[serde(skip_serializing_if = "Map::is_empty")]
            pub extra: Map<String, Value>,
        }

        impl<'a> $name<'a> {
            /// The keys read from the payload.
            pub(crate) const SHAPE: Shape = Shape {
                keys: &sorted([$($(($key, kind_of!($rule)),)*)+]),
            };

            pub(crate) fn normalize(mut f: Fields<'a, '_>) -> Self {
                #[allow(unused_mut)]
                let mut object = Self {
                    $($field: payload_object!(@take f $name $rule $($key),*),)+
                    extra: f.finish(),
                };
                $(let $object = &mut object; $then)?
                object
            }
        }
    };
    (@take $f:ident $name:ident derived) => {
        Default::default()
    };
    (@take $f:ident $name:ident $rule:ident $($key:literal),+) => {
        $f.$rule($(const { $name::SHAPE.key($key) }),+)
    };
}
