{#- The charge object's fields unpacked from `payload` (jsonb / VARIANT) with the cross-warehouse
    json_text accessor; amounts converted from the currency's minor units (cents; whole yen for
    zero-decimal currencies) to major units. -#}
with source as (
    select * from {{ source('raw', 'stripe_charges') }}
),

deduplicated as (
    {{ deduplicate('source', 'id', '_loaded_at desc') }}
),

unpacked as (
    select
        cast(id as {{ dbt.type_string() }}) as charge_id,
        cast(created as bigint) as created_unix,
        {{ json_text('payload', ['metadata', 'order_id']) }} as metadata_order_id,
        {{ json_text('payload', ['customer']) }} as stripe_customer_id,
        cast({{ json_text('payload', ['amount']) }} as bigint) as amount_minor,
        cast({{ json_text('payload', ['amount_refunded']) }} as bigint) as amount_refunded_minor,
        {{ json_text('payload', ['currency']) }} as currency,
        {{ json_text('payload', ['status']) }} as status,
        cast({{ json_text('payload', ['paid']) }} as boolean) as is_paid,
        cast({{ json_text('payload', ['refunded']) }} as boolean) as is_refunded,
        {{ json_text('payload', ['payment_method_details', 'type']) }} as payment_method_type,
        _loaded_at
    from deduplicated
)

select
    charge_id,
    {{ safe_cast_id('metadata_order_id') }} as order_id,
    metadata_order_id,
    stripe_customer_id,
    {{ minor_to_major('amount_minor', 'currency') }} as amount,
    {{ minor_to_major('amount_refunded_minor', 'currency') }} as amount_refunded,
    currency,
    status,
    is_paid,
    is_refunded,
    payment_method_type,
    {{ from_unix_seconds('created_unix') }} as created_at,
    created_unix,
    _loaded_at
from unpacked
