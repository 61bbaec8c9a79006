{#- Order lines rolled up to one row per order (orders without lines have no row here). -#}
select
    order_id,
    {{ sum_integer('quantity') }} as item_count,
    {{ sum_money('gross_amount') }} as gross_amount,
    {{ sum_money('discount_amount') }} as discount_amount,
    max(_loaded_at) as _loaded_at
from {{ ref('stg_order_items') }}
group by order_id
