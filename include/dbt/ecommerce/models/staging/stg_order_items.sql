with source as (
    select * from {{ source('raw', 'order_items') }}
),

deduplicated as (
    {{ deduplicate('source', 'order_item_id', 'updated_at desc, _loaded_at desc') }}
)

select
    cast(order_item_id as bigint) as order_item_id,
    cast(order_id as bigint) as order_id,
    cast(product_id as bigint) as product_id,
    cast(quantity as bigint) as quantity,
    {{ money('unit_price') }} as unit_price,
    {{ money('discount_amount') }} as discount_amount,
    {{ money('quantity * unit_price') }} as gross_amount,
    created_at,
    updated_at,
    _loaded_at
from deduplicated
