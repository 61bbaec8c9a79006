with source as (
    select * from {{ source('raw', 'orders') }}
),

deduplicated as (
    {{ deduplicate('source', 'order_id', 'updated_at desc, _loaded_at desc') }}
)

select
    cast(order_id as bigint) as order_id,
    cast(customer_id as bigint) as customer_id,
    cast(status as {{ dbt.type_string() }}) as status,
    cast(channel as {{ dbt.type_string() }}) as channel,
    cast(currency as {{ dbt.type_string() }}) as currency,
    ordered_at,
    {{ utc_date('ordered_at') }} as order_date,
    created_at,
    updated_at,
    _loaded_at
from deduplicated
